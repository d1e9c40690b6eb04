//! Validated names for topics and subscriptions.
//!
//! Names become directory names on disk and path segments in URLs, so the rules are strict:
//! 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `.`, `_` and `-`; not `.` or `..`;
//! not starting with `.` or `-` (hidden files, flags).

use std::fmt;
use std::str::FromStr;

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The longest service name a caller may give the broker, in bytes.
pub const MAX_SERVICE_NAME_LEN: usize = 128;

/// Whether `name` may name a calling service on the wire (the `switchboard-service` header
/// or gRPC metadata the broker draws its service graph with): 1 to
/// [`MAX_SERVICE_NAME_LEN`] printable ASCII characters, no spaces, so it is a valid header
/// value as it is.
pub fn is_service_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_SERVICE_NAME_LEN && name.iter().all(u8::is_ascii_graphic)
}

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name is empty")]
    Empty {
        /// What was being named ("topic", "subscription").
        kind: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{kind} name is {len} bytes long; the limit is {max}")]
    TooLong {
        /// What was being named.
        kind: &'static str,
        /// The length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "{kind} name {name:?} contains {found:?} at byte {at}; only ASCII letters, digits, '.', '_' and '-' are allowed"
    )]
    InvalidCharacter {
        /// What was being named.
        kind: &'static str,
        /// The name as given (escaped when printed).
        name: String,
        /// The first offending character.
        found: char,
        /// Its byte position.
        at: usize,
    },
    /// The name starts with `.` or `-`, or is `.`/`..`.
    #[error("{kind} name {name:?} must not start with '.' or '-'")]
    BadStart {
        /// What was being named.
        kind: &'static str,
        /// The name as given.
        name: String,
    },
}

fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if let Some((at, found)) =
        name.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::InvalidCharacter { kind, name: name.to_owned(), found, at });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { kind, len: name.len(), max: MAX_NAME_LEN });
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(NameError::BadStart { kind, name: name.to_owned() });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name`.
            ///
            /// # Errors
            /// [`NameError`] says which rule the name breaks.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate($kind, &name)?;
                Ok($ty(name))
            }

            /// A name written in the source: like `new`, but a literal that breaks the rules
            /// is a bug, so it panics instead of returning an error (as
            /// `http::HeaderName::from_static` does).
            ///
            /// # Panics
            /// When `name` breaks a naming rule; the message says which.
            #[track_caller]
            pub fn from_static(name: &'static str) -> Self {
                match $ty::new(name) {
                    Ok(n) => n,
                    Err(e) => panic!("{e}"),
                }
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $ty::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                $ty::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $ty::new(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a topic: a partitioned, retained log.
    TopicName,
    "topic"
);
name_type!(
    /// The name of a subscription: a named cursor on one topic.
    SubscriptionName,
    "subscription"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["orders", "user.created", "a", "A_b-9.x", &"x".repeat(MAX_NAME_LEN)] {
            TopicName::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_each_bad_shape_with_its_own_error() {
        assert_eq!(TopicName::new(""), Err(NameError::Empty { kind: "topic" }));
        assert!(matches!(
            SubscriptionName::new("x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong { kind: "subscription", len: 201, max: 200 })
        ));
        for (bad, c) in
            [("a/b", '/'), ("..\\x", '\\'), ("tab\there", '\t'), ("nul\0", '\0'), ("é", 'é'), ("a b", ' ')]
        {
            match TopicName::new(bad) {
                Err(NameError::InvalidCharacter { found, .. }) => assert_eq!(found, c, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for bad in [".", "..", ".hidden", "-flag"] {
            assert!(matches!(TopicName::new(bad), Err(NameError::BadStart { .. })), "{bad}");
        }
    }

    #[test]
    fn a_static_name_is_checked_like_any_other() {
        assert_eq!(TopicName::from_static("orders"), TopicName::new("orders").expect("valid"));
        let panic = std::panic::catch_unwind(|| SubscriptionName::from_static("a b")).expect_err("invalid");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("subscription name \"a b\" contains ' '"), "{message}");
    }

    #[test]
    fn error_messages_name_the_rule() {
        let e = TopicName::new("a/b").unwrap_err().to_string();
        assert!(e.contains("'/'") && e.contains("only ASCII letters"), "{e}");
    }
}
