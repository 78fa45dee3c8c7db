#!/bin/sh
# Generates the development bundle signing key pair (ES256, P-256) into
# bundles/keys/, unless it already exists. The directory is git-ignored:
# these keys sign bundles on a developer machine only. Production keys come
# from your secret store, never from this script.
set -eu
dir="${1:-bundles/keys}"
if [ -f "$dir/private.pem" ] && [ -f "$dir/public.pem" ]; then
	exit 0
fi
mkdir -p "$dir"
umask 077
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$dir/private.pem"
openssl ec -in "$dir/private.pem" -pubout -out "$dir/public.pem" 2>/dev/null
chmod 644 "$dir/public.pem"
echo "generated $dir/private.pem and $dir/public.pem"
