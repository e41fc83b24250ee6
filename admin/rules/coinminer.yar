// XMRig and other Monero/crypto miners: the most common payload of SSH/telnet brute-force
// campaigns after DDoS bots.
// Sources: XMRig's own config and help text (github.com/xmrig/xmrig: "donate-level",
// "--donate-level", "randomx", "cryptonight"), the Stratum mining protocol ("stratum+tcp://",
// "mining.subscribe", "mining.authorize").
rule CoinMiner_XMRig : miner
{
    meta:
        description = "XMRig or a Stratum coin miner (binary or config)"
        reference = "https://github.com/xmrig/xmrig; Stratum protocol"
    strings:
        $s1 = "stratum+tcp://" ascii
        $s2 = "stratum+ssl://" ascii
        $s3 = "mining.subscribe" ascii
        $s4 = "mining.authorize" ascii
        $x1 = "xmrig" ascii nocase
        $x2 = "donate-level" ascii
        $x3 = "cryptonight" ascii nocase
        $x4 = "randomx" ascii nocase
    condition:
        2 of them
}
