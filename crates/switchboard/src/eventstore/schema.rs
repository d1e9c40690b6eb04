//! The event types a store knows, their current schema versions, and the upcasters that
//! turn an event stored under an older version into the current one when it is read.
//!
//! Events are never rewritten in place: a stored event keeps the version it was written
//! with, and every read (stream, feed, subscription, projection) hands out the current
//! form. An upcaster takes one step, `v` to `v + 1`; a chain covers any distance.

use std::collections::HashMap;
use std::sync::Arc;

use super::{EventStoreError, NewEvent, RecordedEvent};

type Upcaster = Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

/// The event types of a store. Empty (the default), it accepts every type at version 1
/// and changes nothing on read; once it declares a type it is closed: appending or reading
/// an undeclared type is [`EventStoreError::UnknownEventType`].
///
/// ```
/// use switchboard::eventstore::Schema;
///
/// // `order.placed` v1 had `total` in cents; v2 names it `total_cents` and adds a currency.
/// let schema = Schema::new()
///     .event("order.placed", 2)
///     .upcast("order.placed", 1, |mut data| {
///         let total = data["total"].take();
///         data["total_cents"] = total;
///         data["currency"] = "EUR".into();
///         Ok(data)
///     })
///     .event("order.canceled", 1);
/// # let _ = schema;
/// ```
#[derive(Clone, Default)]
pub struct Schema {
    current: HashMap<String, u32>,
    upcasters: HashMap<(String, u32), Upcaster>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("current", &self.current).finish_non_exhaustive()
    }
}

impl Schema {
    /// A schema that declares nothing (and so accepts everything).
    pub fn new() -> Schema {
        Schema::default()
    }

    /// Declares `ty` with its current schema version (1 for a type that never changed).
    #[must_use]
    pub fn event(mut self, ty: impl Into<String>, current_version: u32) -> Schema {
        self.current.insert(ty.into(), current_version.max(1));
        self
    }

    /// Registers the step from schema version `from` to `from + 1` of `ty`: it gets the
    /// stored JSON and returns the next version's.
    #[must_use]
    pub fn upcast(
        mut self,
        ty: impl Into<String>,
        from: u32,
        step: impl Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    ) -> Schema {
        self.upcasters.insert((ty.into(), from), Arc::new(step));
        self
    }

    fn is_closed(&self) -> bool {
        !self.current.is_empty()
    }

    fn current_version(&self, ty: &str) -> Option<u32> {
        if ty.starts_with('$') {
            return Some(1);
        }
        match self.current.get(ty) {
            Some(v) => Some(*v),
            None if self.is_closed() => None,
            None => Some(1),
        }
    }

    /// Checks an event on its way in and settles its schema version.
    pub(crate) fn admit(&self, event: &mut NewEvent) -> Result<(), EventStoreError> {
        let Some(current) = self.current_version(&event.ty) else {
            return Err(EventStoreError::UnknownEventType { ty: event.ty.clone() });
        };
        if event.schema_version == 0 {
            event.schema_version = current;
        } else if event.schema_version != current {
            return Err(EventStoreError::InvalidEvent(format!(
                "event type {:?} is written at schema version {}, but its current version is {current}",
                event.ty, event.schema_version
            )));
        }
        Ok(())
    }

    /// Brings a stored event to its type's current schema version.
    pub(crate) fn upcast_event(&self, mut event: RecordedEvent) -> Result<RecordedEvent, EventStoreError> {
        let Some(current) = self.current_version(&event.ty) else {
            return Err(EventStoreError::UnknownEventType { ty: event.ty });
        };
        if event.schema_version >= current {
            return Ok(event);
        }
        let stored = event.schema_version;
        let mut data: serde_json::Value = serde_json::from_slice(&event.data).map_err(|e| {
            EventStoreError::Upcast { ty: event.ty.clone(), from: stored, error: e.to_string() }
        })?;
        for from in stored..current {
            let Some(step) = self.upcasters.get(&(event.ty.clone(), from)) else {
                return Err(EventStoreError::NoUpcaster { ty: event.ty, from, to: current });
            };
            data =
                step(data).map_err(|error| EventStoreError::Upcast { ty: event.ty.clone(), from, error })?;
        }
        event.data = serde_json::to_vec(&data)
            .map_err(|e| EventStoreError::Upcast {
                ty: event.ty.clone(),
                from: stored,
                error: e.to_string(),
            })?
            .into();
        event.schema_version = current;
        Ok(event)
    }
}
