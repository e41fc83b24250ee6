// The EICAR anti-malware test file: harmless, and every scanner must flag it, so it is how an
// operator checks the whole sample path end to end.
// Source: https://www.eicar.org/download-anti-malware-testfile/ (the 68-byte string).
rule EICAR_Test_File : test
{
    meta:
        description = "EICAR anti-malware test file"
        reference = "https://www.eicar.org/download-anti-malware-testfile/"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar at 0 or $eicar
}
