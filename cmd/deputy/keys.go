package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"regexp"

	"github.com/spf13/cobra"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the keys that sign actor tokens",
	}
	cmd.AddCommand(newKeysGenerateCmd())
	return cmd
}

// Names a Secret key and a Kubernetes object may take.
var (
	secretKeyName = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
	objectName    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

func newKeysGenerateCmd() *cobra.Command {
	var secret, namespace, keyName string
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Print a new ES256 actor-token signing key (PEM), or a Kubernetes Secret holding one",
		Long: `Print a new ECDSA P-256 private key in PEM (PKCS#8), for actor_token.key_files.

With --secret, print a Kubernetes Secret holding the key instead: apply it once
(or seal it for GitOps) and point the chart at it with
signingKeys.existingSecret, so that every render of the chart uses the same
key. A chart that generates its own key cannot keep it when it is rendered
outside a cluster (helm template, GitOps tools).`,
		Example: `  deputy keys generate > signing-key.pem
  deputy keys generate --secret deputy-signing-keys --key-name 2026-11.pem | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if secret != "" && !objectName.MatchString(secret) {
				return fmt.Errorf("--secret %q is not a Kubernetes object name", secret)
			}
			if namespace != "" && !objectName.MatchString(namespace) {
				return fmt.Errorf("--namespace %q is not a Kubernetes namespace name", namespace)
			}
			if !secretKeyName.MatchString(keyName) {
				return fmt.Errorf("--key-name %q: letters, digits, '-', '_' and '.' only", keyName)
			}
			pemKey, err := generateSigningKey()
			if err != nil {
				return err
			}
			if secret == "" {
				_, err = cmd.OutOrStdout().Write(pemKey)
				return err
			}
			return writeKeySecret(cmd.OutOrStdout(), secret, namespace, keyName, pemKey)
		},
	}
	cmd.Flags().StringVar(&secret, "secret", "", "print a Kubernetes Secret of this name holding the key, not the bare PEM")
	cmd.Flags().StringVar(&namespace, "namespace", "", "namespace of the Secret (default: kubectl's current one)")
	cmd.Flags().StringVar(&keyName, "key-name", "signing-key.pem", "key of the PEM in the Secret: the file name Deputy reads, listed in signingKeys.existingSecretKeys")
	return cmd
}

func generateSigningKey() ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writeKeySecret(w io.Writer, name, namespace, keyName string, pemKey []byte) error {
	ns := ""
	if namespace != "" {
		ns = "\n  namespace: " + namespace
	}
	_, err := fmt.Fprintf(w, `# An actor-token signing key for Deputy. Keep it: tokens signed with a
# deleted key stop verifying. Rotate in two steps (docs/deploy.md): list a
# newer key in signingKeys.existingSecretKeys, and name it in
# signingKeys.signWith only once upstreams' cached key sets hold it.
apiVersion: v1
kind: Secret
metadata:
  name: %s%s
  labels:
    app.kubernetes.io/name: deputy
    app.kubernetes.io/component: signing-keys
type: Opaque
data:
  %s: %s
`, name, ns, keyName, base64.StdEncoding.EncodeToString(pemKey))
	return err
}
