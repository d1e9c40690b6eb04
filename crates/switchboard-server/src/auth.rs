//! Bearer tokens with permissions per topic pattern.
//!
//! With no tokens configured every request is allowed (and the server listens on loopback
//! only, see [`ServerConfig::validate`](crate::ServerConfig::validate)).

use serde::{Deserialize, Serialize};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Publish to a topic.
    Publish,
    /// Receive, ack, nack, commit, seek, read.
    Consume,
    /// Create, delete and inspect topics and subscriptions; redrive. On every topic (`*`):
    /// read the service graph.
    Admin,
    /// Send spans (OTLP) to the service graph; granted on `*`.
    Telemetry,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Consume => "consume",
            Action::Admin => "admin",
            Action::Telemetry => "telemetry",
        }
    }
}

/// One grant: actions on topics whose names match a pattern (`*` matches any run of
/// characters: `orders`, `orders.*`, `*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// Topic name pattern.
    pub topics: String,
    /// Allowed actions.
    pub actions: Vec<Action>,
}

/// A configured bearer token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs (never the token itself).
    pub name: String,
    /// The secret.
    pub token: String,
    /// What it may do.
    pub permissions: Vec<Permission>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The token is not configured.
    #[error("invalid bearer token")]
    Invalid,
    /// The token may not do this.
    #[error("token {who:?} may not {action} on {what}")]
    Forbidden {
        /// The token's name.
        who: String,
        /// The action.
        action: &'static str,
        /// The topic (or "all topics").
        what: String,
    },
}

/// The configured tokens.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    tokens: Vec<TokenConfig>,
}

/// Who is calling: an authenticated token, or anyone when auth is off.
#[derive(Clone, Debug)]
pub struct Principal {
    token: Option<TokenConfig>,
    /// The service the caller says it is (the `switchboard-service` header), for the
    /// service graph.
    service: Option<std::sync::Arc<str>>,
}

/// The header (and gRPC metadata key) a caller names its service with, for the service graph.
pub const SERVICE_HEADER: &str = "switchboard-service";

/// What the broker calls a caller that names no service and has no token.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

impl Auth {
    /// Auth over the given tokens (empty: open).
    pub fn new(tokens: Vec<TokenConfig>) -> Auth {
        Auth { tokens }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Identifies the caller from an `Authorization` header value.
    ///
    /// # Errors
    /// [`AuthError::Missing`] or [`AuthError::Invalid`] when tokens are configured.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal { token: None, service: None });
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Missing)?
            .trim();
        // Every token is compared, in constant time and without a branch on the result, so
        // timing reveals neither how much of a token matched nor which one did. (`subtle`
        // treats lengths as public: a token's length may show, its bytes do not.)
        let mut matched = u64::MAX;
        for (i, t) in (0u64..).zip(&self.tokens) {
            matched.conditional_assign(&i, t.token.as_bytes().ct_eq(presented.as_bytes()));
        }
        let found = usize::try_from(matched).ok().and_then(|i| self.tokens.get(i));
        found.map(|t| Principal { token: Some(t.clone()), service: None }).ok_or(AuthError::Invalid)
    }
}

impl Principal {
    /// The same caller, naming its service with the value of [`SERVICE_HEADER`].
    ///
    /// # Errors
    /// A value that is empty, over 128 bytes or not printable ASCII.
    pub fn with_service(mut self, header: Option<&[u8]>) -> Result<Principal, String> {
        let Some(raw) = header else { return Ok(self) };
        if !switchboard_core::is_service_name(raw) {
            return Err(format!(
                "{SERVICE_HEADER}: 1 to 128 printable ASCII characters without spaces, naming the calling service"
            ));
        }
        self.service = std::str::from_utf8(raw).ok().map(std::sync::Arc::from);
        Ok(self)
    }

    /// The service the caller is, for the service graph: the one it names, else its token's
    /// name, else [`UNKNOWN_SERVICE`].
    pub fn service(&self) -> &str {
        self.service.as_deref().or(self.token.as_ref().map(|t| t.name.as_str())).unwrap_or(UNKNOWN_SERVICE)
    }

    /// Allows `action` on `topic` (or, with `None`, on every topic).
    ///
    /// # Errors
    /// [`AuthError::Forbidden`].
    pub fn check(&self, action: Action, topic: Option<&str>) -> Result<(), AuthError> {
        let Some(t) = &self.token else { return Ok(()) };
        let allowed = t.permissions.iter().any(|p| {
            p.actions.contains(&action)
                && match topic {
                    Some(name) => glob_match(&p.topics, name),
                    None => p.topics == "*",
                }
        });
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                who: t.name.clone(),
                action: action.as_str(),
                what: topic.map_or_else(|| "all topics".to_owned(), |n| format!("topic {n}")),
            })
        }
    }

    /// Whether `action` is allowed on `topic` (for filtering lists).
    pub fn may(&self, action: Action, topic: &str) -> bool {
        self.check(action, Some(topic)).is_ok()
    }
}

/// `*` matches any run of characters (including none); everything else literally.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![TokenConfig {
            name: "orders-service".into(),
            token: "s3cret-token-0123456789".into(),
            permissions: vec![
                Permission { topics: "orders*".into(), actions: vec![Action::Publish, Action::Consume] },
                Permission { topics: "audit".into(), actions: vec![Action::Consume] },
            ],
        }])
    }

    #[test]
    fn tokens_are_required_and_checked() {
        let a = auth();
        assert_eq!(a.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(a.authenticate(Some("Basic abc")).unwrap_err(), AuthError::Missing);
        assert_eq!(a.authenticate(Some("Bearer wrong")).unwrap_err(), AuthError::Invalid);
        let p = a.authenticate(Some("Bearer s3cret-token-0123456789")).unwrap();
        p.check(Action::Publish, Some("orders")).unwrap();
        p.check(Action::Consume, Some("orders.eu")).unwrap();
        p.check(Action::Consume, Some("audit")).unwrap();
        assert!(matches!(p.check(Action::Publish, Some("audit")), Err(AuthError::Forbidden { .. })));
        assert!(matches!(p.check(Action::Admin, Some("orders")), Err(AuthError::Forbidden { .. })));
        assert!(matches!(p.check(Action::Consume, None), Err(AuthError::Forbidden { .. })));
    }

    #[test]
    fn each_token_identifies_its_own_caller() {
        let token = |name: &str, token: &str| TokenConfig {
            name: name.into(),
            token: token.into(),
            permissions: vec![],
        };
        let a = Auth::new(vec![
            token("first", "tok-aaaa"),
            token("second", "tok-bbbb"),
            token("third", "tok-cccc"),
        ]);
        for (presented, name) in [("tok-aaaa", "first"), ("tok-bbbb", "second"), ("tok-cccc", "third")] {
            let p = a.authenticate(Some(&format!("Bearer {presented}"))).unwrap();
            assert_eq!(p.token.map(|t| t.name).as_deref(), Some(name));
        }
        for wrong in ["tok-aaab", "tok-aaa", "tok-aaaaa", "", "TOK-AAAA"] {
            assert_eq!(
                a.authenticate(Some(&format!("Bearer {wrong}"))).unwrap_err(),
                AuthError::Invalid,
                "{wrong}"
            );
        }
    }

    #[test]
    fn no_tokens_means_open() {
        let p = Auth::default().authenticate(None).unwrap();
        p.check(Action::Admin, None).unwrap();
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*c", "abc") && glob_match("a*c", "ac") && !glob_match("a*c", "ab"));
        assert!(glob_match("*.dlq", "orders.billing.dlq") && !glob_match("*.dlq", "orders"));
        assert!(glob_match("a*b*c", "a-b-c") && !glob_match("a*b*c", "a-c-b"));
        assert!(!glob_match("orders", "orders2"));
    }
}
