//! An agent's kernel maps, read as bpftool would: the ids of the maps the
//! agent's descriptors hold (/proc/PID/fdinfo), so a test sees what the
//! kernel keeps for that agent and no other running beside it.

use agent_common::block::{BlockHist, BlockKey};
use aya::maps::{Map, MapData, MapInfo, PerCpuHashMap};

/// The id of the agent's map named `name` (the kernel keeps 15 characters);
/// panics if the agent holds none.
pub fn map_id(pid: u32, name: &str) -> u32 {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir}: {e}"));
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            let line = info.lines().find(|l| l.starts_with("map_id:"))?;
            line["map_id:".len()..].trim().parse().ok()
        })
        .find(|&id| {
            MapInfo::from_id(id).is_ok_and(|m| m.name_as_str() == Some(&name[..name.len().min(15)]))
        })
        .unwrap_or_else(|| panic!("agent {pid} holds no map named {name}"))
}

/// The keys of the block probe's histogram map: (device, op, cgroup).
pub fn block_hist_keys(pid: u32) -> Vec<BlockKey> {
    let data = MapData::from_id(map_id(pid, "BLOCK_HIST")).expect("opening BLOCK_HIST");
    let map: PerCpuHashMap<MapData, BlockKey, BlockHist> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).expect("BLOCK_HIST's layout");
    map.keys().map(|k| k.expect("reading a key")).collect()
}
