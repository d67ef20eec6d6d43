use anyhow::Result;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which benchmark: syscalls
    pub which: String,
}

pub fn bench(_args: BenchArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
