// Mirai and its many forks (the IoT botnet most honeypot telnet logins come from).
// Sources: the Mirai source code published in September 2016 (bot/table.c, bot/scanner.c,
// e.g. github.com/jgamblin/Mirai-Source-Code). Its table strings are stored XORed with the
// bytes of table_key 0xdeadbeef, which folds to a single-byte XOR with 0x22
// (0xde ^ 0xad ^ 0xbe ^ 0xef); the scanner's default credentials are stored the same way.
// Plain-text markers (watchdog paths, the Valve query used by its vse attack) are in
// bot/killer.c and bot/attack_udp.c.
rule Mirai_Family : botnet iot
{
    meta:
        description = "Mirai-family IoT bot (XOR 0x22 string table, watchdog and attack strings)"
        reference = "Mirai source, bot/table.c and bot/scanner.c (2016)"
    strings:
        $x1 = "/bin/busybox MIRAI" xor(0x22)
        $x2 = "MIRAI: applet not found" xor(0x22)
        $x3 = "/proc/net/tcp" xor(0x22)
        $x4 = "xmhdipc" xor(0x22)
        $x5 = "juantech" xor(0x22)
        $x6 = "7ujMko0admin" xor(0x22)
        $x7 = "vizxv" xor(0x22)
        $x8 = "xc3511" xor(0x22)
        $p1 = "/dev/watchdog"
        $p2 = "/dev/misc/watchdog"
        $p3 = "TSource Engine Query"
        $p4 = "/bin/busybox MIRAI"
    condition:
        uint32(0) == 0x464c457f and (2 of ($x*) or (1 of ($x*) and 1 of ($p*)) or ($p4 and 1 of ($p1, $p2, $p3)))
}
