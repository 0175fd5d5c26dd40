//! `fare-settlement serve` as a child process (the kill -9 and power-cut
//! tests): started on a free loopback port, its address read from its log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `fare-settlement serve` child and its base URL.
pub struct ServeChild {
    pub child: Child,
    pub url: String,
}

impl ServeChild {
    /// Starts `serve --listen 127.0.0.1:0` on `data` with `config`, and
    /// waits for the line naming its address (failing with the log when it
    /// exits first). Its log is drained afterwards so it never blocks on a
    /// full pipe.
    pub fn start(data: &Path, config: &Path) -> ServeChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fare-settlement"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("fare-settlement serve exited before listening:\n{seen}");
            }
            if let Some(a) = line.trim().strip_prefix("fare-settlement listening on ") {
                break a.to_string();
            }
            seen.push_str(&line);
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        ServeChild {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// SIGKILL, and the child reaped (what dropping it does; a name for the
    /// tests that kill an instance on purpose).
    pub fn kill(self) {
        drop(self);
    }
}

/// A test that ends, or fails, with its instance still running must not
/// leave the process behind (it outlived its temporary data directory).
impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
