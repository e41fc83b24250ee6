//! `drosera-sensor`: thin command line over the `drosera_sensor` library.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("TODO(issue 2): command line")
}
