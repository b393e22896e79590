//! Removing sources: from their own callback, from another callback of the
//! same dispatch, from outside; `finalize` runs exactly once.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use transit_channel::main_loop::{ControlFlow, MainContext, Priority, Source, SourceFds, SourceId};

/// Always ready; counts dispatches and finalizes; runs `on_dispatch`.
struct Probe {
    dispatched: Rc<Cell<u32>>,
    finalized: Rc<Cell<u32>>,
    on_dispatch: Box<dyn FnMut() -> ControlFlow>,
}

impl Source for Probe {
    fn prepare(&mut self, _: Instant, _: &mut Option<Instant>, _: &mut SourceFds) -> bool {
        true
    }
    fn check(&mut self, _: Instant, _: &SourceFds) -> bool {
        true
    }
    fn dispatch(&mut self) -> ControlFlow {
        self.dispatched.set(self.dispatched.get() + 1);
        (self.on_dispatch)()
    }
    fn finalize(&mut self) {
        self.finalized.set(self.finalized.get() + 1);
    }
}

struct Counters {
    dispatched: Rc<Cell<u32>>,
    finalized: Rc<Cell<u32>>,
}

fn probe(
    ctx: &MainContext,
    on_dispatch: impl FnMut() -> ControlFlow + 'static,
) -> (SourceId, Counters) {
    let c = Counters {
        dispatched: Rc::default(),
        finalized: Rc::default(),
    };
    let id = ctx.add_source(
        Box::new(Probe {
            dispatched: c.dispatched.clone(),
            finalized: c.finalized.clone(),
            on_dispatch: Box::new(on_dispatch),
        }),
        Priority::DEFAULT,
    );
    (id, c)
}

#[test]
fn returning_remove_finalizes_once() {
    let ctx = MainContext::new().unwrap();
    let (id, c) = probe(&ctx, || ControlFlow::Remove);
    assert!(ctx.iteration(false));
    assert!(!ctx.iteration(false));
    assert_eq!((c.dispatched.get(), c.finalized.get()), (1, 1));
    assert!(!ctx.contains(id));
    assert!(!ctx.remove(id));
}

#[test]
fn a_source_removes_itself_from_its_callback() {
    let ctx = MainContext::new().unwrap();
    let me: Rc<Cell<Option<SourceId>>> = Rc::default();
    let (m, c2) = (me.clone(), ctx.clone());
    let (id, c) = probe(&ctx, move || {
        assert!(c2.remove(m.get().unwrap()));
        // Still inside the callback: finalize waits until it returns.
        ControlFlow::Continue
    });
    me.set(Some(id));
    assert!(ctx.iteration(false));
    assert!(!ctx.iteration(false));
    assert_eq!((c.dispatched.get(), c.finalized.get()), (1, 1));
}

#[test]
fn a_callback_removes_another_ready_source_of_the_same_dispatch() {
    let ctx = MainContext::new().unwrap();
    let victim: Rc<Cell<Option<SourceId>>> = Rc::default();
    let (v, c2) = (victim.clone(), ctx.clone());
    let (_, killer) = probe(&ctx, move || {
        if let Some(id) = v.take() {
            assert!(c2.remove(id));
        }
        ControlFlow::Continue
    });
    let (vid, vc) = probe(&ctx, || ControlFlow::Continue);
    victim.set(Some(vid));
    assert!(ctx.iteration(false));
    assert_eq!(killer.dispatched.get(), 1);
    assert_eq!(
        vc.dispatched.get(),
        0,
        "removed before its turn in the same dispatch"
    );
    assert_eq!(vc.finalized.get(), 1);
    assert!(ctx.iteration(false));
    assert_eq!((vc.dispatched.get(), vc.finalized.get()), (0, 1));
}

#[test]
fn removing_from_outside_finalizes_once_and_stops_dispatch() {
    let ctx = MainContext::new().unwrap();
    let (id, c) = probe(&ctx, || ControlFlow::Continue);
    assert!(ctx.iteration(false));
    assert!(ctx.remove(id));
    assert!(!ctx.remove(id));
    assert!(!ctx.iteration(false));
    assert_eq!((c.dispatched.get(), c.finalized.get()), (1, 1));
}

#[test]
fn removing_a_source_whose_callback_runs_a_nested_iteration() {
    let ctx = MainContext::new().unwrap();
    let me: Rc<Cell<Option<SourceId>>> = Rc::default();
    let (m, c2) = (me.clone(), ctx.clone());
    let other_runs = Rc::new(Cell::new(0));
    let o = other_runs.clone();
    let (id, c) = probe(&ctx, move || {
        let target = m.get().unwrap();
        let c3 = c2.clone();
        let o2 = o.clone();
        // Another source removes us while we are blocked in a nested
        // iteration.
        c2.idle_add_full(Priority::HIGH, move || {
            o2.set(o2.get() + 1);
            assert!(c3.remove(target));
            ControlFlow::Remove
        });
        c2.iteration(false);
        ControlFlow::Continue
    });
    me.set(Some(id));
    assert!(ctx.iteration(false));
    assert_eq!(other_runs.get(), 1);
    assert_eq!((c.dispatched.get(), c.finalized.get()), (1, 1));
    assert!(!ctx.contains(id));
}

#[test]
fn a_source_added_during_dispatch_waits_for_the_next_iteration() {
    let ctx = MainContext::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l, c2) = (log.clone(), ctx.clone());
    ctx.idle_add(move || {
        l.borrow_mut().push("first");
        let l2 = l.clone();
        c2.idle_add(move || {
            l2.borrow_mut().push("added");
            ControlFlow::Remove
        });
        ControlFlow::Remove
    });
    assert!(ctx.iteration(false));
    assert_eq!(*log.borrow(), ["first"]);
    assert!(ctx.iteration(false));
    assert_eq!(*log.borrow(), ["first", "added"]);
}

#[test]
fn dropping_the_context_finalizes_every_source() {
    let ctx = MainContext::new().unwrap();
    let (_, a) = probe(&ctx, || ControlFlow::Continue);
    let (_, b) = probe(&ctx, || ControlFlow::Continue);
    drop(ctx);
    assert_eq!((a.finalized.get(), b.finalized.get()), (1, 1));
}
