#!/usr/bin/env bash
# Throw-away certificates for the interop suite's HTTPS tests, made with the
# openssl command (same extensions as tests/common/pki.rs; ECDSA P-256, valid
# two days). Usage: pki.sh DIR. Writes, each NAME.pem with NAME-key.pem:
#   ca            the test CA
#   server        signed by ca: subjectAltName IP:127.0.0.1, serverAuth
#   client        signed by ca: CN interop-client, clientAuth
#   other-ca      a CA that signed none of the above
#   other-client  signed by other-ca: CN interop-client, clientAuth
# DIR is replaced as a whole (made under DIR.tmp, then renamed).
set -euo pipefail

dir="${1:?usage: pki.sh DIR}"
tmp="$dir.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
cd "$tmp"

cat >openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

run() {
  local out
  if ! out="$(openssl "$@" 2>&1 </dev/null)"; then
    echo "pki.sh: openssl $* failed:" >&2
    echo "$out" >&2
    exit 1
  fi
}

ca() { # NAME CN
  run req -x509 -config openssl.cnf -extensions ca \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1-key.pem" -out "$1.pem" -days 2 -subj "/CN=$2"
}

serial=0
leaf() { # NAME CN CA KIND
  serial=$((serial + 1))
  run req -new -config openssl.cnf \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$2"
  run x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3-key.pem" -set_serial "$serial" \
    -days 2 -extfile openssl.cnf -extensions "$4" -out "$1.pem"
  rm -f "$1.csr"
}

ca ca "nsqlookupd interop CA"
leaf server 127.0.0.1 ca server
leaf client interop-client ca client
ca other-ca "nsqlookupd interop other CA"
leaf other-client interop-client other-ca client

cd - >/dev/null
rm -rf "$dir"
mv "$tmp" "$dir"
