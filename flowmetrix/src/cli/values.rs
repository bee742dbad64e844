//! The value parsers of the flags: sizes, durations, endpoints, names, switches. Each
//! error is one line naming the value and what was expected.
//!
//! Hand-written, not `humantime` / `bytesize`, because both accept and refuse other inputs
//! than these, and this change keeps what is accepted (measured with humantime 2.4 and
//! bytesize 2.7): humantime overflows on `99999999999999ms` where [`parse_duration`] takes
//! it, and takes `1d`, `2min` and `1h 30m`, which are refused here; bytesize reads `64K`
//! as 64 000 bytes and `8M` as 8 000 000 (decimal units, where these are binary: the ring
//! buffer must be a power of two) and takes `1.5G` and `64 KiB`. A wrapper around either would have to check every input first, i.e. be this
//! code again. Every duration (and the TTL) is a number and a unit: a bare number is
//! refused with the spellings it may have meant.

use std::time::Duration;

/// A size such as 4096, 64K, 512M or 2G (binary units), in bytes.
pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 4096, 64K, 512M or 2G"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M, G or T)")),
    };
    Ok(n.saturating_mul(mult))
}

/// The spool limit: at least 64K.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = parse_bytes(s)?;
    if bytes < 64 << 10 {
        return Err(format!("{s} is too small (at least 64K)"));
    }
    Ok(bytes)
}

/// The ring buffer size: a power of two from 4K to 1G, as the kernel requires.
pub(super) fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let bytes = parse_bytes(s)?;
    if !(4096..=1 << 30).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!(
            "{s} is not a power of two between 4K and 1G (the kernel requires one)"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("{s} is too large"))
}

/// `host:port`; spaces around it (`"a:1, b:2"`) are not part of it.
pub(super) fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not host:port (e.g. 127.0.0.1:4001)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.is_empty() {
        return Err(bad());
    }
    match port.parse::<u64>() {
        Ok(p) if (1..=65535).contains(&p) => {}
        Ok(_) => return Err(format!("'{s}': port {port} is out of range (1-65535)")),
        Err(_) => return Err(bad()),
    }
    Ok(s.to_owned())
}

/// A `host` value: 1 to 253 printable characters without spaces.
pub(super) fn parse_host_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_graphic());
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("'{s}' is not a host name (1-253 printable characters, no spaces)"))
}

pub(super) fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !s.starts_with(|c: char| c.is_ascii_digit());
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("'{s}' is not a name (letters, digits, _ and -)"))
}

/// `250ms`, `1s`, `2m`, `1h`: a number and a unit, as every duration (and `--ttl`) takes.
/// A bare number is refused rather than read as seconds: `--flush-interval 500` meant
/// milliseconds as often as seconds.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 500ms, 1s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => {
            return Err(format!(
                "'{s}' has no unit (write {s}s, {s}ms, {s}m or {s}h)"
            ));
        }
        _ => return Err(format!("'{s}' has an unknown unit (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err(format!("'{s}' must be more than zero"));
    }
    Ok(d)
}

/// `--flow-interval`: a duration from 100ms to 1h.
/// `--flow-interval`, `--dns-timeout`: a duration from 100ms to 1h.
pub(super) fn parse_flow_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!("'{s}' is not between 100ms and 1h"));
    }
    Ok(d)
}

/// A GreptimeDB TTL: a number and a unit (`30m`, `12h`, `7d`, `4w`), or `forever`.
pub(super) fn parse_ttl(s: &str) -> Result<String, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let ok = s == "forever"
        || (!digits.is_empty()
            && digits.parse::<u64>().is_ok_and(|n| n > 0)
            && ["s", "m", "h", "d", "w", "y"].contains(&unit));
    if !ok && unit.is_empty() && digits.parse::<u64>().is_ok_and(|n| n > 0) {
        return Err(format!(
            "'{s}' has no unit (write {s}d, {s}h, {s}w, ... or forever)"
        ));
    }
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("'{s}' is not a TTL such as 12h, 7d, 4w or forever"))
}

/// A switch's value from the environment: 1/0, true/false, yes/no, on/off, in any case.
/// (On the command line a switch takes no value; clap passes "true" when it is given.)
pub(super) fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("a switch is 1, 0, true, false, yes, no, on or off".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greptime_settings_are_checked() {
        assert_eq!(
            parse_endpoint("db.example:4001"),
            Ok("db.example:4001".into())
        );
        assert_eq!(parse_endpoint("[::1]:4001"), Ok("[::1]:4001".into()));
        for bad in [
            "4001",
            ":4001",
            "host:",
            "host:0",
            "host:99999",
            "http://h/x:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err() && parse_duration("1d").is_err());
        // One rule for every duration: a unit is required, as --ttl requires one.
        assert_eq!(
            parse_duration("10"),
            Err("'10' has no unit (write 10s, 10ms, 10m or 10h)".into())
        );
        assert_eq!(
            parse_flow_interval("5"),
            Err("'5' has no unit (write 5s, 5ms, 5m or 5h)".into())
        );
        assert_eq!(
            parse_ttl("7"),
            Err("'7' has no unit (write 7d, 7h, 7w, ... or forever)".into())
        );
        assert_eq!(parse_flow_interval("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_flow_interval("10s"), Ok(Duration::from_secs(10)));
        for bad in ["0", "0ms", "99ms", "2h", "x"] {
            assert!(parse_flow_interval(bad).is_err(), "{bad}");
        }
        assert!(parse_ttl("7d").is_ok() && parse_ttl("forever").is_ok());
        assert!(parse_ttl("7").is_err() && parse_ttl("0d").is_err() && parse_ttl("d").is_err());
        assert!(parse_name("packet_data").is_ok());
        assert!(parse_name("bad;name").is_err() && parse_name("").is_err());
        assert_eq!(
            parse_endpoint("127.0.0.1:99999"),
            Err("'127.0.0.1:99999': port 99999 is out of range (1-65535)".into())
        );
        assert_eq!(
            parse_endpoint("h:0"),
            Err("'h:0': port 0 is out of range (1-65535)".into())
        );
        // Endpoint lists on the command line: cli::tests::endpoint_lists_are_split_and_trimmed.
    }

    #[test]
    fn switch_values() {
        for on in ["1", "true", "TRUE", "yes", "Yes", "on", "ON"] {
            assert_eq!(parse_switch(on), Ok(true), "{on}");
        }
        for off in ["0", "false", "False", "no", "NO", "off", "Off"] {
            assert_eq!(parse_switch(off), Ok(false), "{off}");
        }
        for bad in ["2", "y", "maybe", "enable"] {
            assert!(parse_switch(bad).is_err(), "{bad}");
        }
        // The command line's switches: cli::tests::command_line_switches_still_work.
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_bytes("4096"), Ok(4096));
        assert_eq!(parse_ring_bytes("64K"), Ok(65536));
        assert_eq!(parse_ring_bytes("8M"), Ok(8 << 20));
        assert!(parse_ring_bytes("4095").is_err());
        assert!(parse_ring_bytes("3M").is_err());
        assert!(parse_ring_bytes("2G").is_err());
        assert!(parse_ring_bytes("").is_err());
        assert!(parse_ring_bytes("99999999999999999999").is_err());
    }
}
