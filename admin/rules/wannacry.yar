// WannaCry (WanaCrypt0r 2.0, May 2017), spread by the EternalBlue/DoublePulsar SMB exploit that
// the SMB honeypot answers, so its dropper is what that channel catches.
// Sources: US-CERT alert TA17-132A (file names, kill-switch domain); the dropper's resource zip
// password "WNcry@2ol7" and the "WANACRY!" header of encrypted files are in public analyses
// (e.g. Microsoft, Secureworks, Florian Roth's signature-base WannaCry rules).
rule WannaCry_Markers : ransomware worm
{
    meta:
        description = "WannaCry dropper/encryptor markers"
        reference = "US-CERT TA17-132A"
    strings:
        $kill = "iuqerfsodp9ifjaposdfjhgosurijfaewrwergwea.com" ascii wide
        $pass = "WNcry@2ol7" ascii
        $hdr = "WANACRY!" ascii
        $f1 = "tasksche.exe" ascii wide
        $f2 = "mssecsvc.exe" ascii wide
        $f3 = "t.wnry" ascii wide
        $f4 = "msg/m_english.wnry" ascii wide
        $f5 = "taskdl.exe" ascii wide
        $f6 = "WanaCrypt0r" ascii wide
    condition:
        uint16(0) == 0x5a4d and ($kill or $pass or $hdr or 3 of ($f*))
}
