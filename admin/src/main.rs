//! `drosera-admin`: thin command line over the `drosera_admin` library.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("TODO(issue 4): command line")
}
