//! What the running kernel's BTF says, for the programs that cannot be relocated (Rust eBPF
//! has no CO-RE): the names of the drop reasons `skb:kfree_skb` reports (`enum
//! skb_drop_reason`, and for values from 1 << 16 on the subsystem of `enum
//! skb_drop_reason_subsys`), and the byte offsets of the `sk_buff` and `net_device` fields a
//! program reads. Read once at start from `/sys/kernel/btf/vmlinux`: no table of names or
//! offsets is written here, so a kernel that renumbers or moves them is read as it is.

use std::{borrow::Cow, collections::HashMap, path::Path};

use btf_rs::{Btf, Type};

/// Where the running kernel publishes its BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read the kernel's BTF at {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
    #[error("the kernel's BTF: {0}")]
    Parse(#[from] btf_rs::Error),
}

/// The kernel's BTF, read once.
pub struct KernelBtf(Btf);

impl KernelBtf {
    /// The running kernel's ([`VMLINUX`]).
    pub fn running() -> Result<Self, BtfError> {
        Self::read(Path::new(VMLINUX))
    }

    pub fn read(path: &Path) -> Result<Self, BtfError> {
        Btf::from_file(path)
            .map(Self)
            .map_err(|source| BtfError::Read {
                path: path.display().to_string(),
                source,
            })
    }

    /// The members of enum `name`: (member name, value).
    fn enum_members(&self, name: &str) -> Result<Vec<(String, u32)>, BtfError> {
        for t in self.0.resolve_types_by_name(name)? {
            if let Type::Enum(e) = t {
                return e
                    .members
                    .iter()
                    .map(|m| Ok((self.0.resolve_name(m)?, m.val())))
                    .collect();
            }
        }
        Err(BtfError::Missing(format!("enum {name}")))
    }

    /// The drop reasons by value.
    pub fn drop_reasons(&self) -> Result<DropReasons, BtfError> {
        let core = self
            .enum_members("skb_drop_reason")?
            .into_iter()
            .map(|(name, v)| {
                let short = name
                    .strip_prefix("SKB_DROP_REASON_")
                    .or_else(|| name.strip_prefix("SKB_"))
                    .unwrap_or(&name)
                    .to_owned();
                (v, short)
            })
            .collect();
        // Older kernels have no subsystems: every reason is a core one.
        let subsystems = self
            .enum_members("skb_drop_reason_subsys")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, v)| {
                let short = name.strip_prefix("SKB_DROP_REASON_SUBSYS_")?;
                (short != "NUM" && short != "CORE").then(|| (v, short.to_owned()))
            })
            .collect();
        Ok(DropReasons { core, subsystems })
    }

    /// The byte offset of `field` in struct `strukt`, looked for through the anonymous
    /// unions and structs it is nested in.
    pub fn offset_of(&self, strukt: &str, field: &str) -> Result<u32, BtfError> {
        for t in self.0.resolve_types_by_name(strukt)? {
            if let Type::Struct(s) = t
                && let Some(bits) = self.find_member(&s, field, 0)?
            {
                return Ok(bits / 8);
            }
        }
        Err(BtfError::Missing(format!("{strukt}.{field}")))
    }

    fn find_member(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
    ) -> Result<Option<u32>, BtfError> {
        for m in &s.members {
            let name = self.0.resolve_name(m)?;
            let at = base_bits + m.bit_offset();
            if name == field {
                return Ok(Some(at));
            }
            if name.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) = self.0.resolve_chained_type(m)?
                && let Some(found) = self.find_member(&inner, field, at)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The type names of tracepoint `tp`'s arguments, as a BTF-enabled program gets them
    /// (`btf_trace_<tp>`'s prototype less its first, the context): `sk_buff`, `void`,
    /// `skb_drop_reason`, … (pointers and qualifiers looked through).
    pub fn tracepoint_args(&self, tp: &str) -> Result<Vec<String>, BtfError> {
        let name = format!("btf_trace_{tp}");
        for t in self.0.resolve_types_by_name(&name)? {
            let Type::Typedef(td) = t else { continue };
            let Type::Ptr(p) = self.0.resolve_chained_type(&td)? else {
                continue;
            };
            let Type::FuncProto(proto) = self.0.resolve_chained_type(&p)? else {
                continue;
            };
            return proto
                .parameters
                .iter()
                .skip(1)
                .map(|param| self.type_name(self.0.resolve_chained_type(param)?))
                .collect();
        }
        Err(BtfError::Missing(format!("tracepoint {tp}")))
    }

    /// The name of `t`, through pointers, typedefs' targets excepted, and qualifiers.
    fn type_name(&self, mut t: Type) -> Result<String, BtfError> {
        for _ in 0..8 {
            t = match t {
                Type::Ptr(x) => self.0.resolve_chained_type(&x)?,
                Type::Const(x) => self.0.resolve_chained_type(&x)?,
                Type::Volatile(x) => self.0.resolve_chained_type(&x)?,
                Type::Restrict(x) => self.0.resolve_chained_type(&x)?,
                Type::TypeTag(x) => self.0.resolve_chained_type(&x)?,
                Type::Void => return Ok("void".to_owned()),
                Type::Struct(x) => return Ok(self.0.resolve_name(&x)?),
                Type::Union(x) => return Ok(self.0.resolve_name(&x)?),
                Type::Enum(x) => return Ok(self.0.resolve_name(&x)?),
                Type::Enum64(x) => return Ok(self.0.resolve_name(&x)?),
                Type::Typedef(x) => return Ok(self.0.resolve_name(&x)?),
                Type::Int(x) => return Ok(self.0.resolve_name(&x)?),
                Type::Fwd(x) => return Ok(self.0.resolve_name(&x)?),
                _ => return Ok(String::new()),
            };
        }
        Ok(String::new())
    }

    /// The offsets a program reading an `sk_buff` needs.
    pub fn skb_offsets(&self) -> Result<SkbOffsets, BtfError> {
        let skb = |f| self.offset_of("sk_buff", f);
        Ok(SkbOffsets {
            len: skb("len")?,
            protocol: skb("protocol")?,
            dev: skb("dev")?,
            head: skb("head")?,
            network_header: skb("network_header")?,
            transport_header: skb("transport_header")?,
            dev_ifindex: self.offset_of("net_device", "ifindex")?,
        })
    }
}

/// Byte offsets of the fields of `struct sk_buff` (and `net_device.ifindex`) a program
/// reads, as the running kernel lays them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbOffsets {
    pub len: u32,
    pub protocol: u32,
    pub dev: u32,
    pub head: u32,
    pub network_header: u32,
    pub transport_header: u32,
    pub dev_ifindex: u32,
}

/// The first value of a subsystem's reasons: the subsystem id is in the high 16 bits.
pub const SUBSYS_SHIFT: u32 = 16;

/// The drop reasons of the running kernel, by value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReasons {
    core: HashMap<u32, String>,
    subsystems: HashMap<u32, String>,
}

impl DropReasons {
    /// `NO_SOCKET`, `NETFILTER_DROP`, …; a subsystem's reason as `OPENVSWITCH:3`; a value the
    /// kernel does not name, by number.
    pub fn name(&self, reason: u32) -> Cow<'_, str> {
        let subsys = reason >> SUBSYS_SHIFT;
        if subsys == 0 {
            return match self.core.get(&reason) {
                Some(n) => Cow::Borrowed(n.as_str()),
                None => Cow::Owned(reason.to_string()),
            };
        }
        let code = reason & ((1 << SUBSYS_SHIFT) - 1);
        match self.subsystems.get(&subsys) {
            Some(s) => Cow::Owned(format!("{s}:{code}")),
            None => Cow::Owned(reason.to_string()),
        }
    }

    /// Whether `reason` is a drop: not the normal path (`consume_skb`, `SKB_CONSUMED`) and
    /// not `NOT_SPECIFIED`.
    pub fn is_drop(&self, reason: u32) -> bool {
        !matches!(
            self.core.get(&reason).map(String::as_str),
            Some("CONSUMED" | "NOT_SPECIFIED")
        )
    }

    /// Core reasons the kernel names.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    pub fn is_empty(&self) -> bool {
        self.core.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> KernelBtf {
        KernelBtf::running().unwrap_or_else(|e| {
            panic!("{e}: the tests read the running kernel's BTF (CONFIG_DEBUG_INFO_BTF)")
        })
    }

    #[test]
    fn drop_reasons_are_named_by_the_running_kernel() {
        let r = running().drop_reasons().unwrap();
        assert!(r.len() > 50, "{}", r.len());
        // Values that have kept their place since the enum came (5.17), by name alone.
        let value_of = |want: &str| {
            (0..1024)
                .find(|v| r.name(*v) == want)
                .unwrap_or_else(|| panic!("{want} not named"))
        };
        let no_socket = value_of("NO_SOCKET");
        let netfilter = value_of("NETFILTER_DROP");
        assert!(r.is_drop(no_socket) && r.is_drop(netfilter));
        assert!(!r.is_drop(value_of("NOT_SPECIFIED")));
        assert!(!r.is_drop(value_of("CONSUMED")));
        // A value the kernel does not name, and one of a subsystem it does not know.
        assert_eq!(r.name(60_000), "60000");
        assert_eq!(
            r.name((9_999 << SUBSYS_SHIFT) | 1),
            ((9_999 << 16) | 1).to_string()
        );
    }

    #[test]
    fn subsystem_reasons_carry_the_subsystem_name() {
        let r = DropReasons {
            core: HashMap::from([(3, "NO_SOCKET".into())]),
            subsystems: HashMap::from([(2, "OPENVSWITCH".into())]),
        };
        assert_eq!(r.name((2 << SUBSYS_SHIFT) | 7), "OPENVSWITCH:7");
        assert_eq!(r.name(3), "NO_SOCKET");
    }

    #[test]
    fn kfree_skb_has_a_reason_argument() {
        let args = running().tracepoint_args("kfree_skb").unwrap();
        assert_eq!(
            args.first().map(String::as_str),
            Some("sk_buff"),
            "{args:?}"
        );
        assert_eq!(
            args.get(2).map(String::as_str),
            Some("skb_drop_reason"),
            "{args:?}"
        );
        assert!(matches!(
            running().tracepoint_args("no_such_tracepoint"),
            Err(BtfError::Missing(_))
        ));
    }

    #[test]
    fn sk_buff_offsets_come_from_the_running_kernel() {
        let o = running().skb_offsets().unwrap();
        // Each inside the struct, and distinct; `len` and `head` sit after the list and
        // socket pointers at the start.
        let all = [
            o.len,
            o.protocol,
            o.dev,
            o.head,
            o.network_header,
            o.transport_header,
        ];
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "{o:?}");
        assert!(all.iter().all(|&b| b < 512), "{o:?}");
        assert!(o.dev >= 16 && o.dev_ifindex > 0, "{o:?}");
        assert!(matches!(
            running().offset_of("sk_buff", "no_such_field"),
            Err(BtfError::Missing(_))
        ));
    }
}
