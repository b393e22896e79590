//! `transit bench`: the arguments into a [`BenchConfig`], and the rows of
//! [`transit_transfer::bench`] (which says what each transport is and
//! what is timed) as a table printed as each run ends, or one JSON object.

use serde::Serialize;
use transit_multifd::wire;
use transit_transfer::bench::{Bench, BenchConfig, BenchError, ConfigError, Row, Transport};
use transit_transfer::units;

use crate::cli::BenchArgs;
use crate::error::AppError;
use crate::report::emit_json;

/// Every transport `bench` knows, in table order.
pub use transit_transfer::bench::TRANSPORTS;

#[derive(Serialize)]
struct Report<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    image_bytes: u64,
    zero_ratio: f64,
    packet_payload: u32,
    rows: &'a [Row],
}

/// Run `transit bench`.
pub fn run(args: BenchArgs) -> Result<(), AppError> {
    let transports = if args.transports.is_empty() {
        Transport::ALL.to_vec()
    } else {
        let known = |t: &String| {
            t.parse::<Transport>().map_err(|_| {
                AppError::Usage(format!(
                    "--transports {t}: unknown transport; available: {}",
                    TRANSPORTS.join(", ")
                ))
            })
        };
        args.transports
            .iter()
            .map(known)
            .collect::<Result<_, _>>()?
    };
    let config = BenchConfig {
        size: args.size,
        zero_ratio: args.zero_ratio,
        channels: args.channels,
        transports,
        packet_size: args.packet_size,
        exec_program: None,
    };
    config.check().map_err(usage)?;
    if !args.json {
        eprintln!(
            "transit bench: generating a {} image with {:.0}% zero pages (not timed)",
            units::size(config.size),
            config.zero_ratio * 100.0
        );
    }
    let bench = Bench::prepare(config.clone()).map_err(failed)?;
    if !args.json {
        println!(
            "{:<9} {:>8} {:>10} {:>11} {:>9} {:>12} {:>12} {:>6}",
            "transport",
            "channels",
            "image",
            "data moved",
            "time",
            "image rate",
            "data rate",
            "CPU%"
        );
    }
    let rows = bench
        .run(|row| {
            if !args.json {
                println!(
                    "{:<9} {:>8} {:>10} {:>11} {:>9} {:>12} {:>12} {:>6.0}",
                    row.transport,
                    row.channels,
                    units::size(row.image_bytes),
                    units::size(row.data_bytes),
                    units::seconds(row.seconds),
                    units::rate(row.image_bytes_per_second),
                    units::rate(row.data_bytes_per_second),
                    row.cpu_percent
                );
            }
        })
        .map_err(failed)?;
    if args.json {
        emit_json(
            &Report {
                kind: "bench",
                version: env!("CARGO_PKG_VERSION"),
                image_bytes: config.size,
                zero_ratio: config.zero_ratio,
                packet_payload: bench.packet_payload(),
                rows: &rows,
            },
            false,
        );
    }
    Ok(())
}

/// A configuration error in the words of the command line.
fn usage(e: ConfigError) -> AppError {
    AppError::Usage(match e {
        ConfigError::EmptyImage => "--size must be more than 0".into(),
        ConfigError::NoChannels => "--channels needs at least one count".into(),
        ConfigError::Channels(n) => {
            format!("--channels {n}: expected 1 to {}", wire::MAX_CHANNELS)
        }
        ConfigError::PacketSize(p) => format!(
            "--packet-size {p}: expected 4 KiB to {} bytes",
            wire::MAX_PACKET_PAYLOAD
        ),
    })
}

fn failed(e: BenchError) -> AppError {
    match e {
        BenchError::Config(c) => usage(c),
        e => AppError::from_error(e),
    }
}
