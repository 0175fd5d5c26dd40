//! Opt-in silencing of the panic message rqrr's contained panics print.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// True while this thread runs the rqrr decoder.
    static IN_DECODER: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread marked as "inside the decoder".
pub(crate) fn in_decoder<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0;
            IN_DECODER.with(|c| c.set(prev));
        }
    }
    let _reset = Reset(IN_DECODER.with(|c| c.replace(true)));
    f()
}

static INSTALL: Once = Once::new();

/// Installs a process-wide panic hook that stays silent for panics raised
/// inside this crate's QR decoder (they are contained and logged with
/// `tracing` at debug level) and forwards every other panic to the hook that
/// was installed before.
///
/// Call it once at the start of `main`, before spawning threads: replacing a
/// panic hook is a take-then-set on process-global state, so a library must
/// not do it behind the caller's back (another thread could be installing its
/// own hook at the same moment). Calling it again is a no-op.
pub fn install_quiet_panic_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_DECODER.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
}
