//! The products an engine drives: the default target (the top-level `[auth]` and `[mcp]`)
//! and each `[targets.NAME]`, each with its own login, gateway, tool policy and OAuth
//! grants. A persona names its target; nothing of one product is used for another.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::TickError;
use crate::auth::Authenticator;
use crate::config::{Config, Env, McpConfig};
use crate::mcp::{OAuth, ToolPolicy};
use crate::model::persona::Persona;

/// How personas reach one product.
pub(crate) struct Product {
    pub auth: Authenticator,
    pub mcp: McpConfig,
    pub policy: ToolPolicy,
    pub oauth: Option<Arc<OAuth>>,
    /// Its shared spaces' calls (`[spaces]`); `Err`: the key to set first.
    pub spaces: Result<crate::auth::SpaceCalls, String>,
}

impl Product {
    /// The product `config`'s `[auth]` and `[mcp]` describe.
    fn new(config: &Config, env: &Env) -> Result<Self, TickError> {
        Ok(Self {
            auth: Authenticator::new(config, env)?,
            mcp: config.mcp.clone(),
            policy: ToolPolicy::new(&config.mcp),
            oauth: match config.auth.mode {
                crate::config::AuthMode::Oauth => Some(Arc::new(OAuth::new(config, env)?)),
                _ => None,
            },
            spaces: crate::auth::SpaceCalls::new(config, &config.auth).map_err(|err| err.to_string()),
        })
    }
}

/// The default product and the named targets.
pub(crate) struct Products {
    default: Product,
    targets: BTreeMap<String, Product>,
}

impl Products {
    pub fn new(config: &Config, env: &Env) -> Result<Self, TickError> {
        let mut targets = BTreeMap::new();
        for name in config.targets.keys() {
            let target = config.for_target(name).expect("a configured target");
            targets.insert(name.clone(), Product::new(&target, env)?);
        }
        Ok(Self {
            default: Product::new(config, env)?,
            targets,
        })
    }

    /// The product of `persona` (its target, else the default). A persona of a target
    /// this config lacks is refused before its tick is claimed, so the default here is
    /// only reached by personas of the default target.
    pub fn of(&self, persona: &Persona) -> &Product {
        persona
            .target
            .as_deref()
            .and_then(|name| self.targets.get(name))
            .unwrap_or(&self.default)
    }

    pub fn all(&self) -> impl Iterator<Item = &Product> {
        std::iter::once(&self.default).chain(self.targets.values())
    }
}
