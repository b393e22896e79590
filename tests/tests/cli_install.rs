//! The README's top: the loopback bench and the test command first, then
//! the install line, then completion and manual page lines that work with
//! this build.

use std::path::{Path, PathBuf};

use transit_tests::{require_tool, run, transit, Scratch};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `sh` code blocks of the README, in order, as lines.
fn sh_blocks() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for line in readme.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```sh") => cur = Some(Vec::new()),
            (Some(_), "```") => blocks.push(cur.take().unwrap()),
            (Some(b), l) => b.push(l.to_owned()),
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_starts_with_bench_tests_and_install() {
    let blocks = sh_blocks();
    let first = &blocks[0];
    assert!(
        first[0].starts_with("cargo run --release -p transit -- bench "),
        "{first:?}"
    );
    assert!(first[1].starts_with("cargo test --workspace "), "{first:?}");
    assert!(
        first[2].starts_with("cargo install --path bin --locked "),
        "{first:?}"
    );
    // The install line is true: bin/ is the transit package with the
    // transit binary, and a lock file is there for --locked.
    let manifest = std::fs::read_to_string(root().join("bin/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"transit\"\n"), "{manifest}");
    assert!(
        manifest.contains("[[bin]]\nname = \"transit\""),
        "{manifest}"
    );
    assert!(root().join("Cargo.lock").is_file());
}

#[test]
fn the_readme_completion_and_man_lines_work() {
    let block = &sh_blocks()[1];
    let completion = block
        .iter()
        .find(|l| l.starts_with("transit completions bash > "))
        .unwrap_or_else(|| panic!("no completion line in {block:?}"));
    let man = block
        .iter()
        .find(|l| l.contains("transit man > ") && l.contains("man1/transit.1"))
        .unwrap_or_else(|| panic!("no man line in {block:?}"));
    let words = |cmd: &str| -> Vec<String> {
        cmd.split('>')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    let args = words(completion);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(transit(&args));
    assert_eq!(r.code(), Some(0), "{completion}: {}", r.stderr);
    assert!(r.stdout_text().contains("complete -F"), "{completion}");
    // The page, installed as the line does but under a scratch manual
    // tree, is what `man transit` then shows.
    let cmd = man.rsplit("&& ").next().unwrap();
    let args = words(cmd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(transit(&args));
    assert_eq!(r.code(), Some(0), "{man}: {}", r.stderr);
    let tree = Scratch::new("man-tree");
    std::fs::create_dir_all(tree.join("man1")).unwrap();
    std::fs::write(tree.join("man1/transit.1"), &r.stdout).unwrap();
    let out = std::process::Command::new(require_tool("man"))
        .arg("-M")
        .arg(tree.path())
        .arg("transit")
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .expect("run man");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "man transit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("TRANSIT SEND"), "{text}");
}
