//! `transit --version` says, as `socat -V` does, what this build has:
//! `transit 0.1.0 (features: +tls +ws -rdma -tokio)`, every optional cargo
//! feature of the binary and of transit-channel with `+` or `-`, checked
//! against what the binary does.

use std::path::Path;

use transit_tests::{run, transit};

/// The feature names of a Cargo.toml's `[features]` table.
fn cargo_features(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    text.lines()
        .skip_while(|l| l.trim() != "[features]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| {
            let l = l.trim();
            (!l.is_empty() && !l.starts_with('#'))
                .then(|| l.split('=').next().unwrap().trim().to_owned())
        })
        .collect()
}

/// The `+name` / `-name` tokens of a version line.
fn features_of(line: &str) -> Vec<(char, String)> {
    let list = line
        .split_once("(features: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no feature list in {line:?}"));
    list.split(' ')
        .map(|t| {
            let sign = t.chars().next().unwrap();
            assert!(sign == '+' || sign == '-', "{t:?} in {line:?}");
            (sign, t[1..].to_owned())
        })
        .collect()
}

#[test]
fn version_lists_the_features_of_this_build() {
    let r = run(transit(&["--version"]));
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    let line = r.stdout_text();
    let line = line.trim_end();
    assert!(
        line.starts_with(&format!("transit {} (", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let features = features_of(line);
    let sign = |name: &str| {
        features
            .iter()
            .find(|(_, n)| n == name)
            .map(|(s, _)| *s)
            .unwrap_or_else(|| panic!("{name} is not in {line:?}"))
    };
    // Always built in.
    assert_eq!(sign("tls"), '+');
    assert_eq!(sign("ws"), '+');
    // Every optional cargo feature is listed.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for manifest in ["bin/Cargo.toml", "channel/Cargo.toml"] {
        let names = cargo_features(&root.join(manifest));
        assert!(!names.is_empty(), "{manifest}: no [features]");
        for name in names {
            sign(&name);
        }
    }
    // rdma: what the binary does says whether it was built in.
    let rdma = run(transit(&[
        "send",
        "rdma:127.0.0.1:4799",
        "--ram",
        "1M",
        "--channels",
        "1",
        "--timeout",
        "5",
    ]));
    assert_eq!(rdma.code(), Some(1), "{}", rdma.stderr);
    let without = rdma.stderr.contains("`rdma` cargo feature");
    assert_eq!(
        sign("rdma"),
        if without { '-' } else { '+' },
        "{line}: {}",
        rdma.stderr
    );
    if cfg!(feature = "rdma") {
        assert_eq!(sign("rdma"), '+', "the binary was to be built with rdma");
    }
    // tokio has no effect on the command line: the binary and this test
    // link the transit-channel of the same cargo build.
    for (name, on) in transit_channel::OPTIONAL_FEATURES {
        if name != "rdma" {
            assert_eq!(sign(name), if on { '+' } else { '-' }, "{line}");
        }
    }
    // Subcommands say the same; -V is --version.
    for args in [&["-V"][..], &["send", "--version"], &["bench", "-V"]] {
        let r = run(transit(args));
        assert_eq!(r.code(), Some(0), "{args:?}: {}", r.stderr);
        assert_eq!(
            features_of(r.stdout_text().trim_end()),
            features,
            "{args:?}"
        );
    }
}
