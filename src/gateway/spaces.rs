//! The sample product's shared spaces, as Better Auth's organization plugin keeps them:
//! `POST /api/auth/organization/create` (the creator is its owner), `invite-member` (by
//! email, the inviter must be a member), `accept-invitation` (by the invited user),
//! `remove-member` (by an owner), and
//! the organization list with the personal space and every shared one. A request's
//! `X-Mana-Space` header chooses whose data its tools act on; a tool call naming a space
//! its user is not a member of gets 403.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Claims, Gateway, personal_space_of, unauthorized, user_id_of};

/// One shared space.
#[derive(Clone, Debug)]
pub(super) struct Org {
    pub name: String,
    pub slug: String,
    pub kind: String,
    /// User id → role.
    pub members: HashMap<String, String>,
}

#[derive(Clone, Debug)]
pub(super) struct Invitation {
    pub org: String,
    pub email: String,
    pub role: String,
    pub accepted: bool,
}

#[derive(Default)]
pub(super) struct Spaces {
    pub orgs: HashMap<String, Org>,
    pub invitations: HashMap<String, Invitation>,
}

fn claims(request: &Request) -> Option<Claims> {
    request.extensions().get::<Claims>().cloned()
}

fn bad(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn body(request: Request) -> Option<Value> {
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 16).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `POST /api/auth/organization/create {name, slug, metadata: {type}}`: 409 when the slug is taken.
pub(super) async fn create(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(who) = claims(&request) else {
        return unauthorized("no identity");
    };
    let Some(body) = body(request).await else {
        return bad(StatusCode::BAD_REQUEST, "expected a JSON body {name, slug, metadata}");
    };
    let (Some(name), Some(slug)) = (body["name"].as_str(), body["slug"].as_str()) else {
        return bad(StatusCode::BAD_REQUEST, "name and slug are required");
    };
    let kind = body["metadata"]["type"].as_str().unwrap_or("team").to_string();
    let mut spaces = gateway.inner.spaces.lock().expect("spaces lock");
    if spaces.orgs.values().any(|org| org.slug == slug) {
        return bad(StatusCode::CONFLICT, "an organization with this slug exists");
    }
    let id = format!("org-{}", uuid::Uuid::new_v4());
    let org = Org {
        name: name.to_string(),
        slug: slug.to_string(),
        kind,
        members: HashMap::from([(who.user.clone(), "owner".to_string())]),
    };
    let answer = entry(&id, &org);
    spaces.orgs.insert(id, org);
    (StatusCode::OK, Json(answer)).into_response()
}

/// `POST /api/auth/organization/invite-member {organizationId, email, role}`.
pub(super) async fn invite(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(who) = claims(&request) else {
        return unauthorized("no identity");
    };
    let Some(body) = body(request).await else {
        return bad(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {organizationId, email, role}",
        );
    };
    let (Some(org_id), Some(email)) = (body["organizationId"].as_str(), body["email"].as_str()) else {
        return bad(StatusCode::BAD_REQUEST, "organizationId and email are required");
    };
    let role = body["role"].as_str().unwrap_or("member").to_string();
    let mut spaces = gateway.inner.spaces.lock().expect("spaces lock");
    let Some(org) = spaces.orgs.get(org_id) else {
        return bad(StatusCode::NOT_FOUND, "no such organization");
    };
    if !org.members.contains_key(&who.user) {
        return bad(StatusCode::FORBIDDEN, "only members may invite");
    }
    if org.members.contains_key(&user_id_of(email)) {
        return bad(
            StatusCode::CONFLICT,
            "the user is already a member of this organization",
        );
    }
    let id = format!("inv-{}", uuid::Uuid::new_v4());
    spaces.invitations.insert(
        id.clone(),
        Invitation {
            org: org_id.to_string(),
            email: email.to_lowercase(),
            role: role.clone(),
            accepted: false,
        },
    );
    Json(json!({"id": id, "organizationId": org_id, "email": email, "role": role, "status": "pending"})).into_response()
}

/// `POST /api/auth/organization/accept-invitation {invitationId}`: by the invited user only.
pub(super) async fn accept(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(who) = claims(&request) else {
        return unauthorized("no identity");
    };
    let Some(body) = body(request).await else {
        return bad(StatusCode::BAD_REQUEST, "expected a JSON body {invitationId}");
    };
    let Some(invitation_id) = body["invitationId"].as_str() else {
        return bad(StatusCode::BAD_REQUEST, "invitationId is required");
    };
    let mut spaces = gateway.inner.spaces.lock().expect("spaces lock");
    let Some(invitation) = spaces.invitations.get(invitation_id).cloned() else {
        return bad(StatusCode::NOT_FOUND, "no such invitation");
    };
    if user_id_of(&invitation.email) != who.user {
        return bad(StatusCode::FORBIDDEN, "this invitation is for someone else");
    }
    if invitation.accepted {
        return bad(StatusCode::CONFLICT, "the invitation was accepted already");
    }
    if let Some(org) = spaces.orgs.get_mut(&invitation.org) {
        org.members.insert(who.user.clone(), invitation.role.clone());
    }
    if let Some(stored) = spaces.invitations.get_mut(invitation_id) {
        stored.accepted = true;
    }
    Json(json!({"invitation": {"id": invitation_id, "status": "accepted"},
                "member": {"organizationId": invitation.org, "userId": who.user, "role": invitation.role}}))
    .into_response()
}

/// `POST /api/auth/organization/remove-member {memberIdOrEmail, organizationId}`: by an
/// owner; the removed member's later requests in the space get 403.
pub(super) async fn remove_member(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(who) = claims(&request) else {
        return unauthorized("no identity");
    };
    let Some(body) = body(request).await else {
        return bad(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {memberIdOrEmail, organizationId}",
        );
    };
    let (Some(org_id), Some(member)) = (body["organizationId"].as_str(), body["memberIdOrEmail"].as_str()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "organizationId and memberIdOrEmail are required",
        );
    };
    let member = match member.contains('@') {
        true => user_id_of(member),
        false => member.to_string(),
    };
    let mut spaces = gateway.inner.spaces.lock().expect("spaces lock");
    let Some(org) = spaces.orgs.get_mut(org_id) else {
        return bad(StatusCode::NOT_FOUND, "no such organization");
    };
    if org.members.get(&who.user).map(String::as_str) != Some("owner") {
        return bad(StatusCode::FORBIDDEN, "only an owner may remove members");
    }
    match org.members.remove(&member) {
        Some(role) => {
            Json(json!({"member": {"organizationId": org_id, "userId": member, "role": role}})).into_response()
        }
        None => bad(StatusCode::NOT_FOUND, "no such member"),
    }
}

fn entry(id: &str, org: &Org) -> Value {
    json!({"id": id, "name": org.name, "slug": org.slug, "metadata": {"type": org.kind}})
}

/// `GET /api/auth/organization/list`: the personal space, then the user's shared ones.
pub(super) async fn list(State(gateway): State<Gateway>, request: Request) -> Response {
    let Some(who) = claims(&request) else {
        return unauthorized("no identity");
    };
    let spaces = gateway.inner.spaces.lock().expect("spaces lock");
    let mut shared: Vec<(&String, &Org)> = spaces
        .orgs
        .iter()
        .filter(|(_, org)| org.members.contains_key(&who.user))
        .collect();
    shared.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let mut entries =
        vec![json!({"id": personal_space_of(&who.user), "name": "Personal", "metadata": {"type": "personal"}})];
    entries.extend(shared.into_iter().map(|(id, org)| entry(id, org)));
    Json(Value::Array(entries)).into_response()
}

/// Whose data a request of `user` naming `space` (its header) acts on: the user's own
/// (no header, or its personal space), a shared space it is a member of, or `None`.
pub(super) fn data_key(gateway: &Gateway, user: &str, space: Option<&str>) -> Option<String> {
    match space {
        None => Some(user.to_string()),
        Some(space) if space == personal_space_of(user) => Some(user.to_string()),
        Some(space) => {
            let spaces = gateway.inner.spaces.lock().expect("spaces lock");
            let org = spaces.orgs.get(space)?;
            org.members.contains_key(user).then(|| space.to_string())
        }
    }
}
