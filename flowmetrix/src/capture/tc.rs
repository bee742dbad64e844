//! Attaching the TC programs: through TCX, or a clsact qdisc filter (see the module doc of
//! [`crate::capture`]).

use aya::{
    Ebpf,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions},
    },
    util::KernelVersion,
};
use flowmetrix_common::{TC_EGRESS_PROGRAM_NAME, TC_INGRESS_PROGRAM_NAME};
use tracing::{debug, info, warn};

use super::{
    config::{CaptureConfig, IngressHook, TcAttach},
    error::CaptureError,
    load::program,
    owner, stale,
};

/// The TC programs `cfg` wants: program name, hook, direction.
pub(super) fn tc_hooks(cfg: &CaptureConfig) -> Vec<(&'static str, TcAttachType, &'static str)> {
    let mut tc = Vec::new();
    if cfg.directions.ingress() && cfg.ingress_hook == IngressHook::Tc {
        tc.push((TC_INGRESS_PROGRAM_NAME, TcAttachType::Ingress, "ingress"));
    }
    if cfg.directions.egress() {
        tc.push((TC_EGRESS_PROGRAM_NAME, TcAttachType::Egress, "egress"));
    }
    tc
}

/// Loads TC program `name` and attaches it to the interface's `kind` hook: through TCX, or
/// through a clsact qdisc filter (see the module doc). Returns the link and which it was.
pub(super) fn attach_tc(
    ebpf: &mut Ebpf,
    cfg: &CaptureConfig,
    iface: &str,
    ifindex: u32,
    name: &'static str,
    kind: TcAttachType,
    direction: &'static str,
) -> Result<(SchedClassifierLink, &'static str), CaptureError> {
    let fail =
        |how, hint, source: Box<dyn std::error::Error + Send + Sync>| CaptureError::TcAttach {
            iface: iface.to_owned(),
            direction,
            how,
            hint,
            source,
        };
    // TCX takes a second program beside the first: another collector here would mean
    // every packet twice.
    if let Some(other) = owner::tcx_holder(ifindex, kind == TcAttachType::Egress, name) {
        return Err(CaptureError::TcTaken {
            iface: iface.to_owned(),
            direction,
            program: other.program,
            pid: other.pid,
            comm: other.comm,
        });
    }
    let program: &mut SchedClassifier = program(ebpf, name)?;
    let tcx_here = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if cfg.tc_attach == TcAttach::Tcx || (cfg.tc_attach == TcAttach::Auto && tcx_here) {
        match program.attach_with_options(
            iface,
            kind,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            Ok(id) => {
                let link = program
                    .take_link(id)
                    .map_err(|e| fail("tcx", "", Box::new(e)))?;
                info!(
                    interface = iface,
                    direction,
                    attach = "tcx",
                    sample_rate = cfg.sample_rate,
                    snaplen = cfg.snaplen,
                    "TC attached"
                );
                return Ok((link, "tcx"));
            }
            Err(e) if cfg.tc_attach == TcAttach::Tcx => {
                return Err(fail("tcx", " (TCX needs Linux 6.6 or later)", Box::new(e)));
            }
            Err(e) => debug!("TCX attach on {iface} failed ({e}); trying a clsact qdisc"),
        }
    }
    // A clsact qdisc may be there already (ours from an earlier run, or someone else's).
    if let Err(e) = aya::programs::tc::qdisc_add_clsact(iface) {
        debug!("adding a clsact qdisc to {iface}: {e} (it may exist already)");
    }
    stale::remove(iface, kind, name);
    let id = program
        .attach_with_options(iface, kind, TcAttachOptions::Netlink(NlOptions::default()))
        .map_err(|e| fail("clsact filter", "", Box::new(e)))?;
    let link = program
        .take_link(id)
        .map_err(|e| fail("clsact filter", "", Box::new(e)))?;
    warn!(
        interface = iface,
        direction,
        "a clsact filter (no TCX) stays attached if the collector is killed with SIGKILL"
    );
    info!(
        interface = iface,
        direction,
        attach = "netlink",
        sample_rate = cfg.sample_rate,
        snaplen = cfg.snaplen,
        "TC attached"
    );
    Ok((link, "netlink"))
}
