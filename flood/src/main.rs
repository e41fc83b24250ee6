fn main() -> anyhow::Result<()> { anyhow::bail!("TODO(issue 3): flood") }
