//! Retransmits and resets (kernel side: agent-ebpf/src/tcp_peer.rs): their
//! record offsets from tracefs, and the ring-buffer records of destinations
//! the kernel does not count itself (`peer_counts.rs`).

use super::aggregate::{PeerKind, address};
use super::peer_counts::Shared;
use crate::probes::stats::ProbeStats;
use crate::tracefs::{Field, find};
use agent_common::tcp::{
    LAYOUT_FIELDS, LAYOUT_SOCKADDR, PEER_RESET_RECEIVED, PEER_RESET_SENT, PEER_RETRANSMIT,
    PeerFields, PeerKey, PeerOffsets, known,
};
use anyhow::{Result, bail};
use aya::maps::{MapData, RingBuf};
use std::net::Ipv6Addr;
use std::path::Path;

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

/// The program for each tracepoint on this kernel: the one compiled for its
/// record layout (`known::PROGRAMS`, direct loads), or else the generic one
/// (named after the tracepoint), which reads at the offsets found here.
pub(super) fn programs(offsets: &PeerOffsets) -> [&'static str; 3] {
    let layouts = [
        offsets.retransmit,
        offsets.reset_sent,
        offsets.reset_received,
    ];
    std::array::from_fn(|i| {
        known::PROGRAMS
            .iter()
            .find(|(tp, layout, _)| *tp == i && *layout == layouts[i])
            .map_or(TRACEPOINTS[i], |(_, _, program)| program)
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
            layout: LAYOUT_SOCKADDR,
            dport: 0,
            peer: daddr.offset,
            state,
            err,
        });
    }
    let (dport, daddr_v6) = (get("dport")?, get("daddr_v6")?);
    // `daddr_v6` holds IPv4 mapped, so `family` is not read (5.10's records
    // have none).
    if dport.size != 2 || daddr_v6.size != 16 {
        bail!("tracepoint tcp/{event} has an address layout this agent does not know");
    }
    Ok(PeerFields {
        skaddr,
        layout: LAYOUT_FIELDS,
        dport: dport.offset,
        peer: daddr_v6.offset,
        state,
        err,
    })
}

pub(super) fn kind_of(kind: u16) -> Option<PeerKind> {
    match kind {
        PEER_RETRANSMIT => Some(PeerKind::Retransmit),
        PEER_RESET_SENT => Some(PeerKind::ResetSent),
        PEER_RESET_RECEIVED => Some(PeerKind::ResetReceived),
        _ => None,
    }
}

/// `ip:port` of the key's remote end; None when the kernel had no address.
pub(super) fn destination(key: &PeerKey) -> Option<String> {
    (key.unknown == 0).then(|| address(Ipv6Addr::from(key.addr), key.port))
}

/// The event's kind and peer (`None`: no address), None for a record this
/// agent does not know.
pub(super) fn decode(key: &PeerKey) -> Option<(PeerKind, Option<String>)> {
    Some((kind_of(key.kind)?, destination(key)))
}

pub(super) fn drain(ring: &mut RingBuf<MapData>, shared: &Shared, stats: &ProbeStats) {
    while let Some(item) = ring.next() {
        match super::super::ring_drain::decode::<PeerKey>(&item)
            .as_ref()
            .and_then(decode)
        {
            Some((kind, peer)) => {
                shared.record(|agg| agg.record_peer(kind, peer, 1));
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
        // The known layouts are what tracefs prints (agent_common::tcp::known).
        assert_eq!(
            f(RETRANSMIT_6_18, "tcp_retransmit_skb"),
            known::RETRANSMIT_6_18
        );
        assert_eq!(f(SEND_RESET_6_18, "tcp_send_reset"), known::SEND_RESET_6_12);
        assert_eq!(
            (known::RETRANSMIT_6_18.layout, known::SEND_RESET_6_12.layout),
            (LAYOUT_FIELDS, LAYOUT_SOCKADDR)
        );
        let received = f(RECEIVE_RESET_6_18, "tcp_receive_reset");
        assert_eq!((received.peer, received.state), (46, 0), "no state field");
    }

    #[test]
    fn before_5_11_there_is_no_family_and_none_is_needed() {
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
        assert_eq!(
            (f.layout, f.dport, f.peer, f.err),
            (LAYOUT_FIELDS, 30, 56, 0)
        );
    }

    #[test]
    fn known_layouts_get_their_compiled_programs_and_others_the_generic_ones() {
        let f = |text, event| fields(&parse_format(text), event).unwrap();
        let on_6_18 = PeerOffsets {
            retransmit: f(RETRANSMIT_6_18, "tcp_retransmit_skb"),
            reset_sent: f(SEND_RESET_6_18, "tcp_send_reset"),
            reset_received: f(RECEIVE_RESET_6_18, "tcp_receive_reset"),
        };
        assert_eq!(
            programs(&on_6_18),
            [
                "tcp_retransmit_skb_6_18",
                "tcp_send_reset_6_12",
                "tcp_receive_reset_6_1"
            ]
        );
        // 5.10's three records (tcp_send_reset shares tcp_retransmit_skb's class).
        let on_5_10 = PeerOffsets {
            retransmit: known::SK_SKB_5_10,
            reset_sent: known::SK_SKB_5_10,
            reset_received: known::SK_5_10,
        };
        assert_eq!(
            programs(&on_5_10),
            [
                "tcp_retransmit_skb_5_10",
                "tcp_send_reset_5_10",
                "tcp_receive_reset_5_10"
            ]
        );
        // A layout no kernel we know prints: the generic programs.
        let shifted = |f: PeerFields| PeerFields {
            peer: f.peer + 8,
            ..f
        };
        let unknown = PeerOffsets {
            retransmit: shifted(on_6_18.retransmit),
            reset_sent: shifted(on_6_18.reset_sent),
            reset_received: shifted(on_6_18.reset_received),
        };
        assert_eq!(programs(&unknown), TRACEPOINTS);
    }

    #[test]
    fn a_record_without_an_address_is_an_error() {
        let text = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;";
        let e = fields(&parse_format(text), "tcp_send_reset").unwrap_err();
        assert!(format!("{e:#}").contains("no field `daddr`"), "{e:#}");
    }

    fn key(kind: u16, addr: Ipv6Addr, port: u16) -> PeerKey {
        PeerKey {
            kind,
            port,
            unknown: 0,
            addr: addr.octets(),
        }
    }

    #[test]
    fn decodes_mapped_ipv4_ipv6_and_unknown() {
        let v4 = std::net::Ipv4Addr::new(10, 231, 5, 2).to_ipv6_mapped();
        assert_eq!(
            decode(&key(PEER_RETRANSMIT, v4, 9999)),
            Some((PeerKind::Retransmit, Some("10.231.5.2:9999".into())))
        );
        assert_eq!(
            decode(&key(PEER_RESET_SENT, Ipv6Addr::LOCALHOST, 443)),
            Some((PeerKind::ResetSent, Some("[::1]:443".into())))
        );
        let unknown = PeerKey {
            kind: PEER_RESET_RECEIVED,
            unknown: 1,
            ..PeerKey::default()
        };
        assert_eq!(
            decode(&unknown),
            Some((PeerKind::ResetReceived, None)),
            "no address: counted, peer unknown"
        );
        assert_eq!(decode(&key(99, v4, 1)), None, "unknown kind: a decode loss");
    }
}
