//! The change log behind watches: the last few thousand committed changes,
//! in index order, so a watcher can resume from the index it last saw
//! without missing one. A watcher that fell further behind than the log
//! reaches is told to start over (`Reset`) rather than given a partial view.

use std::collections::VecDeque;
use std::sync::Arc;

use super::model::{Instance, InstanceId, ServiceName, ServiceSettings};
use super::store::Change;

/// How many changes the log keeps.
pub const LOG_CAPACITY: usize = 16_384;

/// One committed change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The index the change created.
    pub index: u64,
    /// What changed.
    pub kind: EventKind,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// An instance was registered or replaced; this is it now.
    Put {
        /// Its service.
        service: ServiceName,
        /// The instance.
        instance: Arc<Instance>,
    },
    /// An instance was removed.
    Delete {
        /// Its service.
        service: ServiceName,
        /// Its id.
        id: InstanceId,
    },
    /// A service's settings changed.
    Settings {
        /// The service.
        service: ServiceName,
        /// The new settings.
        settings: ServiceSettings,
    },
    /// Everything was replaced (an import), or the watcher is too far
    /// behind: read the whole state again.
    Reset,
}

impl EventKind {
    /// The service the event is about (`None` for a reset, which is about all).
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            EventKind::Put { service, .. }
            | EventKind::Delete { service, .. }
            | EventKind::Settings { service, .. } => Some(service),
            EventKind::Reset => None,
        }
    }
}

impl From<&Change> for ChangeEvent {
    fn from(change: &Change) -> Self {
        let kind = match change {
            Change::PutInstance {
                service, instance, ..
            } => EventKind::Put {
                service: service.clone(),
                instance: instance.clone(),
            },
            Change::DeleteInstance { service, id, .. } => EventKind::Delete {
                service: service.clone(),
                id: id.clone(),
            },
            Change::PutSettings {
                service, settings, ..
            } => EventKind::Settings {
                service: service.clone(),
                settings: settings.clone(),
            },
            Change::Restore { .. } => EventKind::Reset,
        };
        ChangeEvent {
            index: change.index(),
            kind,
        }
    }
}

/// The bounded log.
#[derive(Debug)]
pub struct EventLog {
    /// Changes after `floor`, oldest first.
    events: VecDeque<ChangeEvent>,
    /// Every change after this index is in `events`.
    floor: u64,
}

impl EventLog {
    /// An empty log, complete from `index` on (the index at start-up).
    pub fn new(index: u64) -> Self {
        Self {
            events: VecDeque::new(),
            floor: index,
        }
    }

    /// Appends a committed change, dropping the oldest beyond capacity.
    pub fn push(&mut self, event: ChangeEvent) {
        if self.events.len() == LOG_CAPACITY
            && let Some(oldest) = self.events.pop_front()
        {
            self.floor = oldest.index;
        }
        self.events.push_back(event);
    }

    /// The changes after `index`, or `None` when some of them are no longer
    /// kept (the caller must start over).
    pub fn after(&self, index: u64) -> Option<Vec<ChangeEvent>> {
        if index < self.floor {
            return None;
        }
        let start = self.events.partition_point(|e| e.index <= index);
        Some(self.events.range(start..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(index: u64) -> ChangeEvent {
        ChangeEvent {
            index,
            kind: EventKind::Reset,
        }
    }

    #[test]
    fn resumes_after_an_index_and_refuses_what_it_no_longer_has() {
        let mut log = EventLog::new(10);
        for index in 11..=15 {
            log.push(event(index));
        }
        let after: Vec<u64> = log.after(12).unwrap().iter().map(|e| e.index).collect();
        assert_eq!(after, [13, 14, 15]);
        assert_eq!(log.after(15).unwrap(), []);
        assert_eq!(log.after(10).unwrap().len(), 5);
        assert!(
            log.after(9).is_none(),
            "changes before start-up are not kept"
        );
        for index in 16..(16 + LOG_CAPACITY as u64) {
            log.push(event(index));
        }
        assert!(log.after(12).is_none(), "fell out of the log");
        assert!(log.after(15).is_some());
    }
}
