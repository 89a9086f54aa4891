//! The QA dashboard at `/`: one server-rendered page (no script, no CDN, no build step)
//! with ratings per module over time as an SVG chart, modules ranked weakest first with
//! regressions highlighted, the latest low ratings with their notes, and the personas
//! with their last tick and alignment. The admin token is entered once in a login form;
//! the browser then holds the cookie of a server-side session (see `auth::Sessions`).

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiState;
use super::auth::{SESSION_COOKIE, is_admin, session_cookie};
use super::dashboard_views::{chart, low_ratings, modules_table, personas_table, simulators_table, spend_stat};
use super::html::{esc, html, html_page};
use crate::model::persona::DEFAULT_TENANT;
use crate::store::RatingScope;

pub(super) fn login_form(message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"bad\">{}</p>", esc(m)))
        .unwrap_or_default();
    html_page(
        "persona-runner: sign in",
        &format!(
            "<form class=\"login\" method=\"post\" action=\"/login\">\
             <h1>persona-runner QA</h1>{message}\
             <label for=\"token\">Admin token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
             <button type=\"submit\">Sign in</button>\
             <p class=\"muted\">The token of <code>PERSONA_RUNNER_ADMIN_TOKEN</code> (or <code>api.admin_token_file</code>).</p>\
             </form>"
        ),
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Window in days (1–365, default 30).
    days: Option<String>,
}

/// The QA dashboard (HTML): a sign-in form until the session cookie is set.
#[utoipa::path(get, path = "/", tag = "dashboard", security((), ("dashboard_session" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "the dashboard, or the sign-in form", body = String, content_type = "text/html"),
        (status = 503, description = "no admin token configured", body = String, content_type = "text/html"),
    ))]
pub async fn page(
    State(state): State<ApiState>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(token) = state.admin_token() else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            html_page(
                "persona-runner",
                "<form class=\"login\"><h1>persona-runner QA</h1><p>The dashboard needs an admin token: set \
                 <code>PERSONA_RUNNER_ADMIN_TOKEN</code> (or <code>api.admin_token_file</code>) and restart.</p></form>",
            ),
        );
    };
    if !is_admin(&headers, &method, &token, state.sessions()) {
        return html(StatusCode::OK, login_form(None));
    }
    let days = query
        .days
        .as_deref()
        .and_then(|d| d.parse::<i64>().ok())
        .filter(|d| (1..=365).contains(d))
        .unwrap_or(30);
    match render(&state, days).await {
        Ok(text) => html(StatusCode::OK, text),
        Err(err) => {
            tracing::error!(%err, "rendering the dashboard failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                html_page(
                    "persona-runner",
                    "<p>The store failed to answer; see the daemon's log, then reload.</p>",
                ),
            )
        }
    }
}

/// The JSON error of a sign-in post that is not the form.
fn form_error(rejection: &axum::extract::rejection::FormRejection) -> super::error::ApiError {
    use super::error::ApiError;
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the sign-in must be a form (Content-Type: application/x-www-form-urlencoded)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than api.max_body_bytes allows",
        ),
        _ => ApiError::field("token", "the form needs one field, `token`, with the admin token"),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginForm {
    token: String,
}

/// Sign in to the dashboard with the admin token (form post); sets the session cookie.
#[utoipa::path(post, path = "/login", tag = "dashboard",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "signed in: the cookie is set and the page moves on to the dashboard", body = String, content_type = "text/html"),
        (status = 400, description = "the form lacks `token` or is not a form", body = super::error::ErrorBody),
        (status = 401, description = "wrong token: the form again", body = String, content_type = "text/html"),
        (status = 413, description = "body too large", body = super::error::ErrorBody),
        (status = 415, description = "not `application/x-www-form-urlencoded`", body = super::error::ErrorBody),
        (status = 503, description = "no admin token configured", body = String, content_type = "text/html"),
    ))]
pub async fn login(
    State(state): State<ApiState>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return form_error(&rejection).into_response(),
    };
    let Some(token) = state.admin_token() else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            login_form(Some("no admin token is configured")),
        );
    };
    if !crate::auth::constant_time_eq(form.token.trim().as_bytes(), token.expose().as_bytes()) {
        return html(StatusCode::UNAUTHORIZED, login_form(Some("wrong token")));
    }
    let api = &state.config().api;
    let ttl = api.session_ttl.0;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        state.sessions().open(&token, ttl),
        ttl.as_secs(),
        if api.secure_cookie { "; Secure" } else { "" }
    );
    // A same-origin refresh rather than a redirect: the strict cookie then travels with
    // the next request even when the form was posted from elsewhere.
    let mut response = html(
        StatusCode::OK,
        html_page(
            "persona-runner: signed in",
            "<meta http-equiv=\"refresh\" content=\"0; url=/\"><p><a href=\"/\">Continue to the dashboard</a></p>",
        ),
    );
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Sign out of the dashboard: ends the session on the server and clears the cookie.
#[utoipa::path(post, path = "/logout", tag = "dashboard",
    responses((status = 303, description = "signed out, back to the sign-in form")))]
pub async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.sessions().close(id);
    }
    let secure = if state.config().api.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
            ),
        ],
    )
        .into_response()
}

async fn render(state: &ApiState, days: i64) -> Result<String, crate::store::StoreError> {
    let now = crate::time::now();
    let span = std::time::Duration::from_secs(days as u64 * 86_400);
    let window = crate::feedback::window(None, None, span, now).expect("a window without parameters is valid");
    let (since, until) = (window.since, window.until);
    let scope = RatingScope {
        tenant: DEFAULT_TENANT,
        from: since,
        until,
        module: None,
        persona_id: None,
        archetype: None,
    };
    let report = crate::feedback::report(state.store(), &scope, &state.config().feedback).await?;
    let week_ago = crate::time::before(now, std::time::Duration::from_secs(7 * 86_400));
    let personas = state.store().persona_summaries(DEFAULT_TENANT, week_ago).await?;
    let today = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let (tokens_in, tokens_out) = state.store().token_spend(None, today).await?;

    let mut body = String::new();
    let nav: String = [7, 30, 90]
        .iter()
        .map(|d| {
            let on = if *d == days { " class=\"on\"" } else { "" };
            format!("<a{on} href=\"/?days={d}\">{d} days</a>")
        })
        .collect();
    let _ = write!(
        body,
        "<header><h1>persona-runner QA</h1><nav>{nav}</nav>\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form></header><main>"
    );
    let average = report.average.map_or("–".to_string(), |a| format!("{a:.2}"));
    let _ = write!(
        body,
        "<section class=\"wide\" id=\"summary\"><div class=\"stats\">\
         <div class=\"stat\"><b>{}</b><span class=\"muted\">ratings in {days} days</span></div>\
         <div class=\"stat\"><b>{average}</b><span class=\"muted\">average rating</span></div>\
         <div class=\"stat\"><b class=\"{}\">{}</b><span class=\"muted\">regressions against the previous {days} days</span></div>\
         <div class=\"stat\"><b>{}</b><span class=\"muted\">personas</span></div>{}</div></section>",
        report.ratings,
        if report.regressions.is_empty() { "good" } else { "bad" },
        report.regressions.len(),
        personas.len(),
        spend_stat(&state.config().budget, tokens_in, tokens_out)
    );
    body.push_str(&chart(&report, since, until));
    body.push_str(&modules_table(&report.modules, &report));
    body.push_str(&low_ratings(&report));
    body.push_str(&simulators_table(&report));
    let verdicts = state.store().verdicts(DEFAULT_TENANT, None, None, 2_000).await?;
    let names = personas
        .iter()
        .map(|p| (p.id, p.email.clone().unwrap_or_else(|| p.name.clone())))
        .collect();
    let k = state.config().checks.trials as usize;
    body.push_str(&super::goals_view::goals_grid(&verdicts, &names, k, &report.goals));
    let spaces = crate::feedback::spaces::space_views(state.store(), DEFAULT_TENANT, &window).await?;
    body.push_str(&super::spaces_view::spaces_section(&spaces));
    body.push_str(&personas_table(&personas));
    body.push_str("</main>");
    Ok(html_page("persona-runner QA", &body))
}
