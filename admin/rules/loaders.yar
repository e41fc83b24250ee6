// What honeypots catch most besides bots themselves: the droppers that fetch them.
//
// Multi-architecture shell loaders ("bins.sh"): the script a Mirai/Gafgyt loader runs after
// login, fetching one build per CPU (names like mips, mpsl, arm7, x86) and running each.
// Source: such scripts are quoted in Cowrie/Dionaea reports and in the Mirai source's loader
// (loader/src, the ".arch" build names in build.sh).
rule Loader_MultiArch_Shell : dropper
{
    meta:
        description = "shell dropper fetching one bot build per CPU architecture"
        reference = "Mirai build.sh architecture names; honeypot-captured bins.sh scripts"
    strings:
        $get1 = "wget " ascii
        $get2 = "curl " ascii
        $get3 = "tftp " ascii
        $get4 = "ftpget " ascii
        $chmod = "chmod " ascii
        $a1 = "mips" ascii
        $a2 = "mpsl" ascii
        $a3 = "arm7" ascii
        $a4 = "x86" ascii
        $a5 = "ppc" ascii
        $a6 = "m68k" ascii
        $a7 = "sh4" ascii
        $a8 = "spc" ascii
    condition:
        filesize < 1MB and 1 of ($get*) and $chmod and 4 of ($a*)
}

// The "mdrfckr" SSH key: the Outlaw/Dota campaign replaces authorized_keys with a key whose
// comment is "mdrfckr"; it is the single most common persistence command in SSH honeypot logs.
// Source: SANS ISC diaries on the "mdrfckr" key; Cowrie community reports.
rule SSH_Key_Backdoor_mdrfckr : persistence
{
    meta:
        description = "Outlaw/Dota campaign SSH authorized_keys backdoor"
        reference = "SANS Internet Storm Center diaries on the mdrfckr key"
    strings:
        $rsa = "ssh-rsa AAAA" ascii
        $c = "mdrfckr" ascii
    condition:
        $rsa and $c
}

// UPX-packed ELF: not malware by itself but the usual wrapper of IoT bots, worth a filter.
// Source: UPX's packed-file header (the "UPX!" l_info magic), github.com/upx/upx.
rule Packer_UPX_ELF : packer
{
    meta:
        description = "ELF packed with UPX"
        reference = "https://github.com/upx/upx (p_info/l_info magic)"
    strings:
        $upx = "UPX!"
    condition:
        uint32(0) == 0x464c457f and $upx in (0..4096)
}
