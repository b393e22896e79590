//! No decision outside tests is made by matching error text: errors carry
//! types (`transit_channel::Cause`, `Error::is_peer_gone`, the binary's
//! `OpenFailure`, exit statuses), and a message is only for people.
//!
//! This scans the library and binary sources (test modules excluded) for a
//! string search on something that holds an error or its message (`e`,
//! `err`, `msg`, `message`, `why`, `reason`, `.to_string()`), e.g.
//! `e.contains("refused")` or `err.to_string().starts_with("TLS")`.

use std::path::{Path, PathBuf};

/// Source trees whose non-test code must decide from types.
const TREES: [&str; 6] = [
    "bin/src",
    "channel/src",
    "endpoint/src",
    "multifd/src",
    "net-listener/src",
    "transfer/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// True if `line` searches the text of an error or a message.
fn matches_error_text(line: &str) -> bool {
    const SEARCHES: [&str; 4] = [".contains(", ".starts_with(", ".ends_with(", ".find("];
    const HOLDERS: [&str; 7] = ["e", "err", "error", "msg", "message", "why", "reason"];
    for s in SEARCHES {
        let mut from = 0;
        while let Some(at) = line[from..].find(s).map(|i| i + from) {
            from = at + s.len();
            // Only searches for text (a string literal or a &str).
            let arg = line[at + s.len()..].trim_start();
            if !(arg.starts_with('"') || arg.starts_with("&format!")) {
                continue;
            }
            let before = &line[..at];
            if before.ends_with(".to_string()") {
                return true;
            }
            let ident: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if HOLDERS.contains(&ident.as_str()) {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_detector_sees_the_old_patterns() {
    for bad in [
        r#"let told = e.contains("exited with status") || e.contains("killed by signal");"#,
        r#"Err(e) if !e.is_would_block() && e.to_string().contains("refused") => Some(e),"#,
        r#"if err.starts_with("TLS") {"#,
        r#"} else if message.contains("websocket") {"#,
    ] {
        assert!(matches_error_text(bad), "missed: {bad}");
    }
    for fine in [
        r#"if s.starts_with("ws://") || s.starts_with("wss://") {"#,
        r#"let speed = if name.contains("AES_128_GCM") {"#,
        r#"if self.features.contains(Features::SEEKABLE) {"#,
        r#"if host.contains(':') {"#,
    ] {
        assert!(!matches_error_text(fine), "false alarm: {fine}");
    }
}

#[test]
fn no_decision_is_made_by_matching_error_text() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for t in TREES {
        rust_files(&root.join(t), &mut files);
    }
    assert!(files.len() > 50, "too few sources found: {}", files.len());
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Test modules sit at the end of a file.
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if matches_error_text(line) {
                found.push(format!("{}:{}: {}", f.display(), n + 1, code));
            }
        }
    }
    assert!(
        found.is_empty(),
        "decisions made by matching error text (use the error's type):\n{}",
        found.join("\n")
    );
}
