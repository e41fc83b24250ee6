// Gafgyt / Bashlite / Qbot / Lizkebab: the IRC-less C bot whose source leaked in 2015 and which
// still ships in honeypot downloads next to Mirai. Its command words are plain text.
// Sources: the leaked client.c (commands PING, GETLOCALIP, SCANNER ON|OFF, HOLD, JUNK, UDP, TCP,
// KILLATTK, LOLNOGTFO, GTFOFAG, FATCOCK) as described in Unit 42's and Netlab's Gafgyt write-ups.
rule Gafgyt_Bashlite : botnet iot
{
    meta:
        description = "Gafgyt/Bashlite bot command strings"
        reference = "leaked Bashlite client.c; Palo Alto Unit 42 Gafgyt analyses"
    strings:
        $c1 = "GETLOCALIP"
        $c2 = "KILLATTK"
        $c3 = "LOLNOGTFO"
        $c4 = "GTFOFAG"
        $c5 = "FATCOCK"
        $c6 = "SCANNER ON"
        $c7 = "SCANNER OFF"
        $c8 = "HOLD Flooding"
        $c9 = "JUNK Flooding"
    condition:
        uint32(0) == 0x464c457f and 3 of them
}
