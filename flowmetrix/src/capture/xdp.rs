//! Attaching the XDP program to an interface.

use aya::{
    Ebpf,
    programs::{Xdp, links::FdLink},
};
use flowmetrix_common::PROGRAM_NAME;
use tracing::{debug, info};

use super::{
    config::{CaptureConfig, XdpMode},
    error::CaptureError,
    load::program,
    owner,
};

/// Loads the XDP program and attaches it to `ifindex`; returns its link and mode.
pub(super) fn attach_xdp(
    ebpf: &mut Ebpf,
    cfg: &CaptureConfig,
    iface: &str,
    ifindex: u32,
) -> Result<(FdLink, &'static str), CaptureError> {
    let program: &mut Xdp = program(ebpf, PROGRAM_NAME)?;

    let attempts: &[(aya::programs::XdpMode, &'static str)] = match cfg.mode {
        XdpMode::Auto => &[
            (aya::programs::XdpMode::Driver, "native"),
            (aya::programs::XdpMode::Skb, "skb"),
        ],
        XdpMode::Native => &[(aya::programs::XdpMode::Driver, "native")],
        XdpMode::Skb => &[(aya::programs::XdpMode::Skb, "skb")],
    };
    let mut last_err = None;
    let mut attached = None;
    for &(mode, name) in attempts {
        match program.attach_to_if_index(ifindex, mode) {
            Ok(id) => {
                attached = Some((id, name));
                break;
            }
            Err(e) => {
                if attempts.len() > 1 {
                    debug!("{name} XDP on {iface} failed ({e}); trying the next mode");
                }
                last_err = Some((name, e));
            }
        }
    }
    let Some((id, mode)) = attached else {
        let (mode, source) = last_err.ok_or(CaptureError::Missing("an attach mode"))?;
        // "File exists" from the kernel: name the program that holds the interface.
        if let Some(taken) = owner::attached_program(ifindex) {
            return Err(taken.error(iface));
        }
        return Err(CaptureError::Attach {
            iface: iface.to_owned(),
            mode,
            hint: if mode == "native" {
                " (the driver may lack native XDP: try --xdp-mode skb)"
            } else {
                ""
            },
            source: Box::new(source),
        });
    };
    // Own the link as a bpf_link fd: closing it (drop, exit, SIGKILL) detaches.
    let link = program
        .take_link(id)
        .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        .and_then(|link| FdLink::try_from(link).map_err(|e| Box::new(e) as _))
        .map_err(|source| CaptureError::Attach {
            iface: iface.to_owned(),
            mode,
            hint: "",
            source,
        })?;
    info!(
        interface = iface,
        mode,
        sample_rate = cfg.sample_rate,
        snaplen = cfg.snaplen,
        "XDP attached"
    );
    Ok((link, mode))
}
