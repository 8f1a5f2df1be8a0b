#!/bin/sh
# gen-tls.sh DIR: the test TLS material of the secure broker, made with openssl
# (POSIX sh: docker/kafka-local.sh runs it on the host, the compose profile
# `secure` in an alpine container). Files that exist are kept: it makes them
# only when one of them is missing, then all of them afresh.
#
#   ca.pem, ca.key              the test CA (RSA 2048, 10 years) the broker trusts
#   broker.pem, broker.key      the broker's certificate (subjectAltName DNS:localhost ONLY,
#                               deliberately no IP:127.0.0.1, so a client that dials
#                               127.0.0.1 gets a hostname mismatch) and key (PKCS#8)
#   broker-keystore.pem         broker.key + broker.pem + ca.pem, Kafka's PEM key store
#   client.pem                  client certificate, CN=mykafkams-client, signed by the CA
#   client.key                  its key, unencrypted PKCS#8    (BEGIN PRIVATE KEY)
#   client-encrypted.key        the same key, encrypted PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY,
#                               PBES2 AES-256-CBC, PBKDF2-HMAC-SHA256), password client-key-secret
#   client-rsa.key              the same key, PKCS#1           (BEGIN RSA PRIVATE KEY)
#   other-ca.pem, other-ca.key  a second CA that nothing trusts
#   other-client.pem, .key      a client certificate CN=mykafkams-client signed by other-ca
#                               (the SSL listener must refuse it)
set -eu

dir=${1:?usage: gen-tls.sh DIR}
days=3650
files="ca.pem ca.key broker.pem broker.key broker-keystore.pem client.pem client.key
  client-encrypted.key client-rsa.key other-ca.pem other-ca.key other-client.pem other-client.key"

command -v openssl >/dev/null 2>&1 || {
  echo "gen-tls: openssl not found: install it (Debian: apt-get install openssl; Alpine: apk add openssl)" >&2
  exit 1
}
mkdir -p "$dir"
cd "$dir"

complete=1
for f in $files; do [ -s "$f" ] || complete=0; done
if [ "$complete" = 1 ]; then exit 0; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A config of our own, so the host's openssl.cnf adds no extensions of its own.
cat > "$tmp/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

key() { # key FILE: a fresh RSA 2048 key, unencrypted PKCS#8
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
}
ca() { # ca NAME SUBJECT
  key "$tmp/$1.key"
  openssl req -config "$tmp/openssl.cnf" -new -x509 -sha256 -days "$days" \
    -key "$tmp/$1.key" -subj "$2" -extensions ca -out "$tmp/$1.pem"
}
leaf() { # leaf NAME SUBJECT EXTENSIONS CA
  key "$tmp/$1.key"
  openssl req -config "$tmp/openssl.cnf" -new -key "$tmp/$1.key" -subj "$2" -out "$tmp/$1.csr"
  openssl x509 -req -sha256 -days "$days" -in "$tmp/$1.csr" \
    -CA "$tmp/$4.pem" -CAkey "$tmp/$4.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$tmp/openssl.cnf" -extensions "$3" -out "$tmp/$1.pem" 2>/dev/null
}

ca ca "/O=MyKafkaMS/CN=MyKafkaMS test CA"
ca other-ca "/O=Elsewhere/CN=Unrelated test CA"
leaf broker "/O=MyKafkaMS/CN=mykafkams-broker" server ca
leaf client "/CN=mykafkams-client" client ca
leaf other-client "/CN=mykafkams-client" client other-ca

# Kafka's PEM key store: the key first, then the chain. The broker key stays
# unencrypted: Kafka 4.1 reads an unencrypted PKCS#8 key when ssl.key.password is
# unset (an encrypted one needs ssl.key.password).
cat "$tmp/broker.key" "$tmp/broker.pem" "$tmp/ca.pem" > "$tmp/broker-keystore.pem"
openssl pkcs8 -topk8 -in "$tmp/client.key" -v2 aes-256-cbc -v2prf hmacWithSHA256 \
  -passout pass:client-key-secret -out "$tmp/client-encrypted.key"
openssl rsa -in "$tmp/client.key" -traditional -out "$tmp/client-rsa.key" 2>/dev/null

# Test material, readable by whoever runs the broker (in Docker another uid).
for f in $files; do chmod 644 "$tmp/$f"; cp "$tmp/$f" "$f"; done
echo "gen-tls: made a test CA, broker and client certificates in $dir" >&2
