//! Which interfaces to capture on (`-i eth0,eth1`, `-i 'veth*'`), and the kernel's news of
//! interfaces appearing, being renamed and going away (rtnetlink's link group), so that
//! patterns follow a container host's veths as they come and go.

use futures_util::StreamExt as _;
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage},
    },
};

/// The `-i` values: names, and patterns with `*` (any run of characters) and `?` (any one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub names: Vec<String>,
    pub patterns: Vec<String>,
}

/// Whether an `-i` value is a pattern rather than a name.
pub fn is_pattern(value: &str) -> bool {
    value.contains(['*', '?'])
}

impl Selection {
    /// Sorts `-i` values into names and patterns (duplicates dropped, order kept).
    pub fn new<S: AsRef<str>>(values: &[S]) -> Self {
        let mut s = Self::default();
        for v in values {
            let v = v.as_ref().trim();
            if v.is_empty() {
                continue;
            }
            let list = if is_pattern(v) {
                &mut s.patterns
            } else {
                &mut s.names
            };
            if !list.iter().any(|x| x == v) {
                list.push(v.to_owned());
            }
        }
        s
    }

    /// Exactly one interface named and no pattern: the original's single-interface run,
    /// which ends when that interface goes away.
    pub fn single(&self) -> Option<&str> {
        match (self.names.as_slice(), self.patterns.is_empty()) {
            ([one], true) => Some(one),
            _ => None,
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name) || self.patterns.iter().any(|p| glob(p, name))
    }
}

/// `*` matches any run of characters (none included), `?` any one; the rest is literal.
///
/// Hand-written rather than `globset`: its `?` matches one byte (its patterns compile to a
/// byte regex, `(?-u)`), not one character of a non-ASCII interface name, and `[`, `{` and
/// `\` are syntax there but literal in an `-i` value (only `*` and `?` make a pattern).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it has been tried to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The interfaces of this network namespace: (ifindex, name).
pub fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ending in a zeroed entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut at = list;
        while (*at).if_index != 0 && !(*at).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*at).if_name).to_string_lossy();
            out.push(((*at).if_index, name.into_owned()));
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// What happened to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link exists with this name: new, changed (up, down, renamed) or as it was.
    Present { ifindex: u32, name: String },
    /// The link went away (deleted, or moved to another namespace).
    Gone { ifindex: u32 },
    /// The kernel's news may have been lost (the socket overran, or closed): look again.
    Resync,
}

/// The link group of rtnetlink, subscribed to.
pub struct Watcher {
    messages: futures_util::stream::BoxStream<'static, NetlinkMessage<RouteNetlinkMessage>>,
    /// Keeps the connection's request side open.
    _handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl Watcher {
    /// Subscribes; events from now on. (List what exists with [`interfaces`] after this, so
    /// nothing falls between the two.)
    pub fn start() -> std::io::Result<Self> {
        let (connection, handle, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
        let connection = tokio::spawn(connection);
        Ok(Self {
            messages: messages.map(|(m, _)| m).boxed(),
            _handle: handle,
            connection,
            ended: false,
        })
    }

    /// The next link event; [`LinkEvent::Resync`] once if the subscription ended, then
    /// nothing (pending forever).
    pub async fn next(&mut self) -> LinkEvent {
        loop {
            if self.ended {
                return std::future::pending().await;
            }
            let Some(msg) = self.messages.next().await else {
                self.ended = true;
                return LinkEvent::Resync;
            };
            if let Some(ev) = event(msg) {
                return ev;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
            let name = link_name(&link)?;
            Some(LinkEvent::Present {
                ifindex: link.header.index,
                name,
            })
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => Some(LinkEvent::Gone {
            ifindex: link.header.index,
        }),
        NetlinkPayload::Overrun(_) | NetlinkPayload::Error(_) => Some(LinkEvent::Resync),
        _ => None,
    }
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_shell() {
        for (p, n) in [
            ("veth*", "veth0"),
            ("veth*", "veth"),
            ("*", "eth0"),
            ("ens?", "ens3"),
            ("e*0", "eth0"),
            ("*a*b", "xxaxxab"),
            ("fmv*", "fmv-new1"),
            ("??", "lo"),
        ] {
            assert!(glob(p, n), "{p} matches {n}");
        }
        for (p, n) in [
            ("veth*", "eth0"),
            ("ens?", "ens33"),
            ("ens?", "ens"),
            ("e*0", "eth1"),
            ("*a*b", "xxaxxa"),
            ("lo", "lo0"),
        ] {
            assert!(!glob(p, n), "{p} does not match {n}");
        }
    }

    #[test]
    fn only_star_and_question_mark_are_special_and_question_mark_is_one_character() {
        assert!(glob("wl?n", "wl\u{e4}n"), "one character, two bytes");
        assert!(!glob("wl??n", "wl\u{e4}n"));
        assert!(glob("br[0]*", "br[0]-x") && !glob("br[0]*", "br0"));
        assert!(glob("{a,b}?", "{a,b}1") && !glob("{a,b}?", "a1"));
        assert!(glob("v\\*", "v\\x") && !glob("v\\*", "vx"));
        assert!(glob("**", "eth0") && glob("e**0", "e0"));
    }

    #[test]
    fn values_are_sorted_into_names_and_patterns() {
        let s = Selection::new(&["eth0", "veth*", "eth1", "eth0", " ", "ens?"]);
        assert_eq!(s.names, ["eth0", "eth1"]);
        assert_eq!(s.patterns, ["veth*", "ens?"]);
        assert!(s.matches("eth1") && s.matches("veth9") && s.matches("ens5"));
        assert!(!s.matches("eth2") && !s.matches("lo"));
        assert_eq!(s.single(), None);
        assert_eq!(Selection::new(&["eth0"]).single(), Some("eth0"));
        assert_eq!(Selection::new(&["eth*"]).single(), None);
        assert_eq!(Selection::new(&["eth0", "eth1"]).single(), None);
    }

    #[test]
    fn this_namespace_has_a_loopback() {
        assert!(interfaces().iter().any(|(i, n)| *i > 0 && n == "lo"));
    }
}
