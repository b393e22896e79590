//! The binary is argument parsing, payload choice, library calls and
//! reports: it implements no `Channel` and decodes no wire bytes (the
//! endpoint crate opens and accepts channels; multifd classifies
//! connections, refuses strangers and meets plain-bytes peers). This scans
//! `bin/src` (test modules excluded) for either.

use std::path::Path;

/// What the binary must not contain, and why.
const FORBIDDEN: [(&str, &str); 9] = [
    (
        "impl Channel for",
        "a Channel implementation (belongs in transit-channel or transit-endpoint)",
    ),
    ("impl ShutdownChannel for", "a Channel implementation"),
    (
        "wire::decode_",
        "wire decoding (belongs in transit-multifd)",
    ),
    ("wire::classify", "wire decoding"),
    ("wire::framed_start", "wire decoding"),
    ("MAIN_MAGIC", "wire decoding"),
    ("PAGE_MAGIC", "wire decoding"),
    ("Record::", "wire records (belongs in transit-multifd)"),
    ("to_bytes()", "wire encoding"),
];

/// The non-test part of a source file.
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn the_binary_implements_no_channel_and_decodes_no_wire_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bin/src");
    let mut found = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&p).unwrap();
        for (n, line) in non_test(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (pat, why) in FORBIDDEN {
                if code.contains(pat) {
                    found.push(format!("{}:{}: {why}: {}", p.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(files >= 10, "read only {files} files of {}", dir.display());
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_scan_sees_what_it_forbids() {
    let sample = "impl Channel for Thing {}\nlet h = wire::decode_session_header(&b);\n#[cfg(test)]\nimpl Channel for Fake {}";
    let code = non_test(sample);
    let hits: Vec<_> = FORBIDDEN
        .iter()
        .filter(|(pat, _)| code.lines().any(|l| l.contains(pat)))
        .collect();
    assert_eq!(hits.len(), 2, "{hits:?}");
}
