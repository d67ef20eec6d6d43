//! Retransmits and resets (kernel side: agent-ebpf/src/tcp_peer.rs): their
//! record offsets from tracefs, and the peer address each event carries.

use super::aggregate::{PeerKind, TcpAggregate, address};
use crate::probes::lock;
use crate::probes::stats::ProbeStats;
use crate::tracefs::{Field, find};
use agent_common::tcp::{
    AF_INET, AF_INET6, LAYOUT_FIELDS, LAYOUT_SOCKADDR, PEER_RESET_RECEIVED, PEER_RESET_SENT,
    PEER_RETRANSMIT, PeerEvent, PeerFields, PeerOffsets,
};
use anyhow::{Result, bail};
use aya::maps::{MapData, RingBuf};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Mutex;

/// The three tracepoints, in the order of `PeerOffsets`' fields.
pub(super) const TRACEPOINTS: [&str; 3] =
    ["tcp_retransmit_skb", "tcp_send_reset", "tcp_receive_reset"];

/// Offsets of the three records on this kernel.
pub(super) fn offsets(tracefs: &Path) -> Result<PeerOffsets> {
    let [retransmit, reset_sent, reset_received] =
        TRACEPOINTS.map(|tp| crate::tracefs::format(tracefs, "tcp", tp));
    Ok(PeerOffsets {
        retransmit: fields(&retransmit?, TRACEPOINTS[0])?,
        reset_sent: fields(&reset_sent?, TRACEPOINTS[1])?,
        reset_received: fields(&reset_received?, TRACEPOINTS[2])?,
    })
}

/// Where one record keeps the remote end: `family`, `dport` and `daddr_v6`
/// (IPv4 mapped), or since 6.10 in `tcp_send_reset` a 28-byte sockaddr in `daddr`.
fn fields(format: &[Field], event: &str) -> Result<PeerFields> {
    let get = |name| find(format, "tcp", event, name);
    let skaddr = get("skaddr")?.offset;
    let state = get("state").map_or(0, |f| f.offset);
    let err = get("err").map_or(0, |f| f.offset);
    let daddr = get("daddr")?;
    if daddr.size == 28 {
        return Ok(PeerFields {
            skaddr,
            layout: LAYOUT_SOCKADDR.into(),
            family: 0,
            dport: 0,
            peer: daddr.offset,
            state,
            err,
            _pad: 0,
        });
    }
    let (dport, daddr_v6) = (get("dport")?, get("daddr_v6")?);
    // Before 5.11 there is no `family`: the address tells (IPv4 is stored
    // IPv4-mapped), so offset 0 (never a field's: the common fields are
    // there) means "none".
    let family = get("family").ok();
    if family.as_ref().is_some_and(|f| f.size != 2) || dport.size != 2 || daddr_v6.size != 16 {
        bail!("tracepoint tcp/{event} has an address layout this agent does not know");
    }
    Ok(PeerFields {
        skaddr,
        layout: LAYOUT_FIELDS.into(),
        family: family.map_or(0, |f| f.offset),
        dport: dport.offset,
        peer: daddr_v6.offset,
        state,
        err,
        _pad: 0,
    })
}

/// The event's kind and peer (`ip:port`), None when it has no readable address.
pub(super) fn decode(ev: &PeerEvent) -> Option<(PeerKind, Option<String>)> {
    let kind = match ev.kind {
        PEER_RETRANSMIT => PeerKind::Retransmit,
        PEER_RESET_SENT => PeerKind::ResetSent,
        PEER_RESET_RECEIVED => PeerKind::ResetReceived,
        _ => return None,
    };
    Some((kind, (ev.read_failed == 0).then(|| peer(ev)).flatten()))
}

fn peer(ev: &PeerEvent) -> Option<String> {
    let p = &ev.peer;
    let bytes = |range: std::ops::Range<usize>| &p[range];
    match ev.layout {
        // Family 0: a kernel without the field; the mapped address says which.
        LAYOUT_FIELDS if matches!(ev.family, 0 | AF_INET | AF_INET6) => {
            let v6: [u8; 16] = bytes(0..16).try_into().ok()?;
            Some(address(Ipv6Addr::from(v6), ev.dport))
        }
        LAYOUT_SOCKADDR => {
            // sockaddr_in / sockaddr_in6: family in host order, port in network order.
            let family = u16::from_ne_bytes(bytes(0..2).try_into().ok()?);
            let port = u16::from_be_bytes(bytes(2..4).try_into().ok()?);
            let ip = match family {
                AF_INET => {
                    let v4: [u8; 4] = bytes(4..8).try_into().ok()?;
                    Ipv4Addr::from(v4).to_ipv6_mapped()
                }
                AF_INET6 => {
                    let v6: [u8; 16] = bytes(8..24).try_into().ok()?;
                    Ipv6Addr::from(v6)
                }
                // All zero: a reset with neither a full socket nor a packet.
                _ => return None,
            };
            Some(address(ip, port))
        }
        _ => None,
    }
}

pub(super) fn drain(ring: &mut RingBuf<MapData>, agg: &Mutex<TcpAggregate>, stats: &ProbeStats) {
    while let Some(item) = ring.next() {
        match super::super::ring_drain::decode::<PeerEvent>(&item)
            .as_ref()
            .and_then(decode)
        {
            Some((kind, peer)) => {
                lock(agg).record_peer(kind, peer);
                stats.add_events(1);
            }
            None => stats.add_decode_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracefs::parse_format;

    /// 6.18's records, as tracefs prints them (trimmed to the fields).
    const RETRANSMIT_6_18: &str = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;";
    const SEND_RESET_6_18: &str = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;";
    const RECEIVE_RESET_6_18: &str = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:26;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:30;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;";

    #[test]
    fn finds_both_layouts_of_6_18() {
        let f = |text, event| fields(&parse_format(text), event).unwrap();
        assert_eq!(
            f(RETRANSMIT_6_18, "tcp_retransmit_skb"),
            PeerFields {
                skaddr: 16,
                layout: LAYOUT_FIELDS.into(),
                family: 32,
                dport: 30,
                peer: 58,
                state: 24,
                err: 76,
                _pad: 0
            }
        );
        assert_eq!(
            f(SEND_RESET_6_18, "tcp_send_reset"),
            PeerFields {
                skaddr: 16,
                layout: LAYOUT_SOCKADDR.into(),
                family: 0,
                dport: 0,
                peer: 60,
                state: 24,
                err: 0,
                _pad: 0
            }
        );
        let received = f(RECEIVE_RESET_6_18, "tcp_receive_reset");
        assert_eq!((received.peer, received.state), (46, 0), "no state field");
    }

    #[test]
    fn before_5_11_the_address_gives_the_family() {
        // 5.10's tcp_retransmit_skb: no `family`, IPv4 stored IPv4-mapped.
        let text = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;";
        let f = fields(&parse_format(text), "tcp_retransmit_skb").unwrap();
        assert_eq!((f.family, f.dport, f.peer, f.err), (0, 30, 56, 0));
        let mut ev = PeerEvent {
            kind: PEER_RETRANSMIT,
            layout: LAYOUT_FIELDS,
            dport: 8080,
            ..PeerEvent::default()
        };
        ev.peer[..16].copy_from_slice(&Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets());
        let (_, peer) = decode(&ev).unwrap();
        assert_eq!(peer.as_deref(), Some("10.1.2.3:8080"));
        ev.peer[..16].copy_from_slice(&"fd00::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(decode(&ev).unwrap().1.as_deref(), Some("[fd00::7]:8080"));
    }

    #[test]
    fn a_record_without_an_address_is_an_error() {
        let text = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;";
        let e = fields(&parse_format(text), "tcp_send_reset").unwrap_err();
        assert!(format!("{e:#}").contains("no field `daddr`"), "{e:#}");
    }

    fn sockaddr(kind: u16, bytes: &[u8]) -> PeerEvent {
        let mut ev = PeerEvent {
            kind,
            layout: LAYOUT_SOCKADDR,
            ..Default::default()
        };
        ev.peer[..bytes.len()].copy_from_slice(bytes);
        ev
    }

    #[test]
    fn decodes_sockaddr_in_and_in6() {
        let mut v4 = AF_INET.to_ne_bytes().to_vec();
        v4.extend(8080u16.to_be_bytes());
        v4.extend([10, 1, 2, 3]);
        assert_eq!(
            decode(&sockaddr(PEER_RESET_SENT, &v4)),
            Some((PeerKind::ResetSent, Some("10.1.2.3:8080".into())))
        );
        let mut v6 = AF_INET6.to_ne_bytes().to_vec();
        v6.extend(443u16.to_be_bytes());
        v6.extend([0; 4]); // flowinfo
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        assert_eq!(
            decode(&sockaddr(PEER_RESET_SENT, &v6)),
            Some((PeerKind::ResetSent, Some("[::1]:443".into())))
        );
        assert_eq!(
            decode(&sockaddr(PEER_RESET_SENT, &[])),
            Some((PeerKind::ResetSent, None)),
            "no socket and no packet: counted, peer unknown"
        );
    }

    #[test]
    fn decodes_split_fields_and_rejects_garbage() {
        let mut ev = PeerEvent {
            kind: PEER_RETRANSMIT,
            layout: LAYOUT_FIELDS,
            family: AF_INET,
            dport: 9999,
            ..Default::default()
        };
        ev.peer[..16].copy_from_slice(&Ipv4Addr::new(10, 231, 5, 2).to_ipv6_mapped().octets());
        assert_eq!(
            decode(&ev),
            Some((PeerKind::Retransmit, Some("10.231.5.2:9999".into())))
        );
        ev.read_failed = 1;
        assert_eq!(decode(&ev), Some((PeerKind::Retransmit, None)));
        ev.kind = 99;
        assert_eq!(decode(&ev), None, "unknown kind: a decode loss");
    }
}
