//! `transit completions SHELL` and `transit man`: shell completion scripts
//! and the manual page, generated from the clap definitions of [`crate::cli`].

use std::io::Write;

use clap_mangen::Man;

use crate::error::AppError;

/// Write the completion script of `shell` for `cmd` to `out`.
pub fn completions(
    shell: clap_complete::Shell,
    mut cmd: clap::Command,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    out.flush().map_err(write_failed)
}

/// Write the manual page of `cmd` to `out`: the top level as clap_mangen
/// renders it, then one section per subcommand (synopsis, description,
/// options) and the examples of the help texts as literal blocks.
pub fn man(mut cmd: clap::Command, out: &mut dyn Write) -> Result<(), AppError> {
    cmd.build();
    let page = render(&cmd).map_err(write_failed)?;
    out.write_all(&page).map_err(write_failed)?;
    out.flush().map_err(write_failed)
}

/// DESCRIPTION of the page.
const DESCRIPTION: &str = "transit moves a RAM-like image or a byte stream from transit send \
to transit recv over one main channel plus N page channels (multifd), or as plain bytes over \
one connection with --raw, for peers that are not transit. Transports: TCP, UNIX and vsock \
sockets, inherited file descriptors, files, websockets, TLS beneath any of them, commands \
(exec:, e.g. over ssh) and RDMA. transit bench measures every transport over loopback.";

/// EXIT STATUS of the page (crate::error).
const EXIT_STATUS: &str = "0 success, 1 the transfer failed, 2 usage error (the command line \
is wrong), 130 cancelled by SIGINT or SIGTERM.";

fn render(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let name = cmd.get_name().to_owned();
    // NAME reads "transit - what it does", not "transit - transit: ...".
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let about = about.trim_start_matches(&format!("{name}: ")).to_owned();
    let man = Man::new(cmd.clone().about(about).long_about(DESCRIPTION))
        .source(format!("{name} {}", env!("CARGO_PKG_VERSION")));
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    // The commands, each described in its own section of this page.
    writeln!(page, ".SH COMMANDS")?;
    for sub in &subs {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        writeln!(
            page,
            ".TP\n\\fB{} {}\\fR\n{}",
            name,
            sub.get_name(),
            roff_text(&about)
        )?;
    }
    if let Some(help) = cmd.get_after_help() {
        examples(&mut page, "SH", &help.to_string())?;
    }
    for sub in subs {
        let title = format!("{} {}", name, sub.get_name()).to_uppercase();
        writeln!(page, ".SH \"{}\"", title)?;
        let man = Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        // One page: the subcommand's sections become subsections.
        for line in String::from_utf8_lossy(&part).lines() {
            match line.strip_prefix(".SH ") {
                Some(heading) => writeln!(page, ".SS {}", title_case(heading))?,
                None => writeln!(page, "{line}")?,
            }
        }
        if let Some(help) = sub.get_after_help() {
            examples(&mut page, "SS", &help.to_string())?;
        }
    }
    writeln!(page, ".SH \"EXIT STATUS\"\n{}", roff_text(EXIT_STATUS))?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// `OPTIONS` -> `Options` (a subsection heading).
fn title_case(heading: &str) -> String {
    let h = heading.trim_matches('"');
    let mut out = String::with_capacity(h.len());
    for (i, c) in h.chars().enumerate() {
        if i == 0 {
            out.push(c);
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// An `Examples ...:` help text as a heading (`.SH` or `.SS`) with its
/// first line, then the examples as a literal block: no filling, and
/// `-` as the ASCII minus so a copied command works.
fn examples(page: &mut Vec<u8>, level: &str, help: &str) -> std::io::Result<()> {
    let all: Vec<&str> = help.lines().collect();
    let first = all
        .iter()
        .position(|l| l.starts_with("  "))
        .unwrap_or(all.len());
    let (intro, body) = all.split_at(first);
    let heading = if level == "SH" {
        "EXAMPLES"
    } else {
        "Examples"
    };
    writeln!(page, ".{level} {heading}")?;
    let intro = intro.join(" ");
    let intro = intro.trim_start_matches("Examples").trim();
    let intro = intro
        .trim_start_matches('(')
        .trim_end_matches(':')
        .trim_end_matches(')');
    if !intro.is_empty() {
        let mut sentence = intro.to_owned();
        if let Some(first) = sentence.get(..1) {
            sentence.replace_range(..1, &first.to_uppercase());
        }
        writeln!(page, "{}.", roff_text(&sentence))?;
    }
    writeln!(page, ".PP\n.nf\n.RS 4")?;
    for line in body {
        let line = line.strip_prefix("  ").unwrap_or(line);
        if line.starts_with("More:") {
            break;
        }
        writeln!(page, "{}", roff_text(line))?;
    }
    writeln!(page, ".RE\n.fi")?;
    Ok(())
}

/// Text for a roff input line: backslashes and minus signs escaped, and
/// a leading `.` or `'` kept from being read as a request.
fn roff_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    if s.starts_with('.') || s.starts_with('\'') {
        out.push_str("\\&");
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    out
}

fn write_failed(e: std::io::Error) -> AppError {
    AppError::failed(format!("write to stdout: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_text_escapes_what_roff_would_read() {
        assert_eq!(roff_text("a-b \\n"), "a\\-b \\en");
        assert_eq!(roff_text(".x"), "\\&.x");
        assert_eq!(roff_text("'x"), "\\&'x");
    }

    #[test]
    fn headings_become_title_case() {
        assert_eq!(title_case("OPTIONS"), "Options");
        assert_eq!(title_case("\"SYNOPSIS\""), "Synopsis");
    }
}
