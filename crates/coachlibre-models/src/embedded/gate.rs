//! Admission to an embedded model: a few slots, and two bounded waiting lines.
//!
//! People in a conversation ([`Priority::Interactive`]) are served first, in order. Background
//! work waits in its own line, served when no person waits, taking tenants in turn; each
//! tenant may have only a share of that line, so one tenant's batch of skill runs cannot fill
//! it for the others, and no background work can take a person's place in line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use coachlibre_core::ids::TenantId;
use coachlibre_core::model::Priority;
use tokio::sync::oneshot;

/// Why a request is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its waiting line is full.
    Full { waiting: usize },
    /// Its tenant already has its share of the background line.
    TenantShare { share: usize },
}

struct Waiter {
    tenant: Option<TenantId>,
    tx: oneshot::Sender<Slot>,
}

struct Lines {
    free: usize,
    interactive: VecDeque<Waiter>,
    background: VecDeque<Waiter>,
    /// The tenant whose background work was served last.
    last: Option<TenantId>,
}

struct Shared {
    lines: Mutex<Lines>,
    max_waiting: usize,
    tenant_share: usize,
}

/// The admission gate of one model. Cheap to clone.
#[derive(Clone)]
pub struct Gate(Arc<Shared>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// A held slot; dropping it hands it to the next waiter.
pub struct Slot {
    gate: Option<Arc<Shared>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// Admitted: at once, or after waiting behind `ahead` requests.
#[derive(Debug)]
pub enum Admission {
    Now(Slot),
    Later {
        ahead: usize,
        slot: oneshot::Receiver<Slot>,
    },
}

impl Gate {
    /// `slots` requests run at once; each line holds up to `max_waiting`; a tenant's background
    /// work holds at most a quarter of its line (at least one place).
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        Self(Arc::new(Shared {
            lines: Mutex::new(Lines {
                free: slots.max(1),
                interactive: VecDeque::new(),
                background: VecDeque::new(),
                last: None,
            }),
            max_waiting,
            tenant_share: (max_waiting / 4).max(1),
        }))
    }

    fn lines(&self) -> MutexGuard<'_, Lines> {
        lock(&self.0)
    }

    /// Requests waiting, both lines.
    pub fn waiting(&self) -> usize {
        let mut l = self.lines();
        prune(&mut l);
        l.interactive.len() + l.background.len()
    }

    /// Ask for a slot for work of `priority`.
    pub fn admit(&self, priority: Priority) -> Result<Admission, Refused> {
        let mut l = self.lines();
        prune(&mut l);
        let tenant = match priority {
            Priority::Interactive => None,
            Priority::Background { tenant } => Some(tenant),
        };
        // Interactive work passes waiting background work; background work waits its turn.
        let ahead = match tenant {
            None => l.interactive.len(),
            Some(_) => l.interactive.len() + l.background.len(),
        };
        if l.free > 0 && ahead == 0 {
            l.free -= 1;
            return Ok(Admission::Now(Slot {
                gate: Some(self.0.clone()),
            }));
        }
        let (tx, rx) = oneshot::channel();
        match tenant {
            None => {
                if l.interactive.len() >= self.0.max_waiting {
                    return Err(Refused::Full {
                        waiting: l.interactive.len(),
                    });
                }
                l.interactive.push_back(Waiter { tenant, tx });
            }
            Some(t) => {
                let mine = l.background.iter().filter(|w| w.tenant == Some(t)).count();
                if mine >= self.0.tenant_share {
                    return Err(Refused::TenantShare {
                        share: self.0.tenant_share,
                    });
                }
                if l.background.len() >= self.0.max_waiting {
                    return Err(Refused::Full {
                        waiting: l.background.len(),
                    });
                }
                l.background.push_back(Waiter { tenant, tx });
            }
        }
        Ok(Admission::Later { ahead, slot: rx })
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Lines> {
    shared
        .lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Forget waiters that gave up.
fn prune(l: &mut Lines) {
    l.interactive.retain(|w| !w.tx.is_closed());
    l.background.retain(|w| !w.tx.is_closed());
}

/// The next background waiter: the first of a tenant other than the last served, if any.
fn next_background(l: &mut Lines) -> Option<Waiter> {
    let i = l
        .background
        .iter()
        .position(|w| w.tenant != l.last)
        .unwrap_or(0);
    let w = l.background.remove(i)?;
    l.last = w.tenant;
    Some(w)
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.gate.take() else {
            return;
        };
        let mut l = lock(&shared);
        let mut slot = Slot {
            gate: Some(shared.clone()),
        };
        loop {
            let next = match l.interactive.pop_front() {
                Some(w) => Some(w),
                None => next_background(&mut l),
            };
            let Some(w) = next else { break };
            match w.tx.send(slot) {
                Ok(()) => return,
                // The waiter gave up meanwhile: offer the slot to the next one.
                Err(back) => slot = back,
            }
        }
        // Nobody waits: the slot is free again (disarmed, so dropping it does nothing).
        slot.gate = None;
        l.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::generate()
    }

    fn later(a: Result<Admission, Refused>) -> (usize, oneshot::Receiver<Slot>) {
        match a {
            Ok(Admission::Later { ahead, slot }) => (ahead, slot),
            other => panic!("expected to wait: {other:?}"),
        }
    }

    #[tokio::test]
    async fn people_pass_background_work_and_tenants_take_turns() {
        let gate = Gate::new(1, 8);
        let (a, b) = (tenant(), tenant());
        let bg = |t| Priority::Background { tenant: t };
        let Ok(Admission::Now(running)) = gate.admit(bg(a)) else {
            panic!("a free slot is taken at once")
        };
        let (_, a1) = later(gate.admit(bg(a)));
        let (_, a2) = later(gate.admit(bg(a)));
        let (ahead, b1) = later(gate.admit(bg(b)));
        assert_eq!(ahead, 2);
        let (ahead, person) = later(gate.admit(Priority::Interactive));
        assert_eq!(ahead, 0, "a person waits behind no background work");

        drop(running);
        let slot = person.await.expect("the person goes first");
        drop(slot);
        let slot = a1.await.expect("then background work, in order");
        drop(slot);
        let slot = b1.await.expect("then the other tenant, before a's second");
        drop(slot);
        let slot = a2.await.expect("then a again");
        drop(slot);
        assert!(matches!(gate.admit(bg(b)), Ok(Admission::Now(_))));
    }

    #[test]
    fn one_tenant_cannot_fill_the_background_line() {
        let gate = Gate::new(1, 8);
        let a = tenant();
        let bg = Priority::Background { tenant: a };
        let _running = gate.admit(bg).expect("admitted");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(later(gate.admit(bg)));
        }
        assert_eq!(
            gate.admit(bg).err(),
            Some(Refused::TenantShare { share: 2 })
        );
        // Others still get in, people too.
        held.push(later(gate.admit(Priority::Background { tenant: tenant() })));
        held.push(later(gate.admit(Priority::Interactive)));
        assert_eq!(gate.waiting(), 4);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_the_slot() {
        let gate = Gate::new(1, 8);
        let running = gate.admit(Priority::Interactive).expect("admitted");
        let (_, gone) = later(gate.admit(Priority::Interactive));
        let (_, next) = later(gate.admit(Priority::Interactive));
        drop(gone);
        drop(running);
        let slot = next.await.expect("the slot skips who left");
        drop(slot);
        assert_eq!(gate.waiting(), 0);
        assert!(matches!(
            gate.admit(Priority::Interactive),
            Ok(Admission::Now(_))
        ));
    }
}
