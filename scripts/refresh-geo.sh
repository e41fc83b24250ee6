#!/usr/bin/env bash
# Refreshes the offline enrichment databases shipped in admin/data/ (see docs/enrichment.md).
#
# * Country: npm package @ip-location-db/geo-whois-asn-country-mmdb (an .mmdb as published).
# * ASN:     npm package @ip-location-db/asn (CSV ranges), converted here into an .mmdb laid out
#            like GeoLite2-ASN (autonomous_system_number, autonomous_system_organization) so the
#            admin reads both with the same maxminddb reader.
# Needs npm and python3 (the converter is installed into a throwaway venv from PyPI).
# Run it by hand, then rebuild drosera-admin (the default databases are embedded in the binary)
# and commit admin/data/. No source IP is ever looked up online: this only downloads the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
out=admin/data
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent @ip-location-db/geo-whois-asn-country-mmdb >/dev/null
npm pack --silent @ip-location-db/asn >/dev/null
mkdir country asn
tar xzf ip-location-db-geo-whois-asn-country-mmdb-*.tgz -C country
tar xzf ip-location-db-asn-*.tgz -C asn
country_version=$(python3 -c 'import json,sys;print(json.load(open("country/package/package.json"))["version"])')
asn_version=$(python3 -c 'import json,sys;print(json.load(open("asn/package/package.json"))["version"])')
python3 -m venv venv
venv/bin/pip install -q 'mmdb-writer==0.2.7' 'netaddr>=1,<2'
venv/bin/python - <<'PY'
import csv, netaddr
from mmdb_writer import MMDBWriter, MmdbU32
w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="Drosera-ASN",
               languages=["en"], description="ip-location-db asn (RouteViews, NRO, DB-IP; CC BY 4.0)")
for name in ("asn/package/asn-ipv4.csv", "asn/package/asn-ipv6.csv"):
    with open(name, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) < 3 or not row[2].isdigit():
                continue
            rng = netaddr.IPRange(row[0], row[1])
            w.insert_network(netaddr.IPSet(rng.cidrs()), {
                "autonomous_system_number": MmdbU32(int(row[2])),
                "autonomous_system_organization": (row[3] if len(row) > 3 else "")[:200],
            })
w.to_db_file("asn.mmdb")
PY
cd - >/dev/null
cp "$work/country/package/geo-whois-asn-country.mmdb" "$out/country.mmdb"
cp "$work/asn.mmdb" "$out/asn.mmdb"
cat > "$out/VERSIONS" <<V
country.mmdb  @ip-location-db/geo-whois-asn-country-mmdb $country_version  CC BY 4.0 (NRO; see docs/enrichment.md)
asn.mmdb      @ip-location-db/asn $asn_version (converted)  CC BY 4.0 (RouteViews, NRO, DB-IP)
refreshed     $(date -u +%Y-%m-%d)
V
ls -la "$out"
