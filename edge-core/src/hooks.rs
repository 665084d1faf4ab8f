//! HOOK: where DeviceTwin and the EventBus (embedded MQTT broker) plug into
//! the daemon. Kept minimal until they are wired in: a callback when
//! objects change, and a handle that appends upstream messages to the
//! durable outbox.

use futures_channel::mpsc;
use schema::Message;

use crate::link::Input;
use crate::store::Change;

/// Where DeviceTwin and the EventBus plug in (HOOK, wired in later):
/// `on_change` is called after every commit with the objects that changed
/// (DeviceTwin watches kind `device`), and [`Upstream`] appends messages to
/// the durable outbox from any task of the thread.
#[derive(Default)]
pub struct EdgeHooks {
    pub on_change: Vec<ChangeHook>,
    /// Called once at start, on the daemon's thread, with the handle that
    /// appends upstream messages to the outbox.
    pub on_start: Option<Box<dyn FnOnce(Upstream)>>,
}

/// Called with the objects one commit changed.
pub type ChangeHook = Box<dyn Fn(&[Change])>;

impl std::fmt::Debug for EdgeHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EdgeHooks({} on_change)", self.on_change.len())
    }
}

/// A handle to send upstream messages (device twin reports, pod status…):
/// they are written to the outbox, then sent when the link allows.
#[derive(Debug, Clone)]
pub struct Upstream(mpsc::UnboundedSender<Input>);

impl Upstream {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Input>) -> Self {
        Self(tx)
    }

    /// Queues `messages`; false once the daemon has stopped.
    pub fn send(&self, messages: Vec<Message>) -> bool {
        self.0.unbounded_send(Input::Upstream(messages)).is_ok()
    }
}
