package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// SSH credentials of a shared workspace never reach PostgreSQL or the bucket
// in plain text. With Shared.SecretsKey they are sealed (XChaCha20-Poly1305,
// key = SHA-256 of the configured secret, bound to workspace and target name)
// into target_secrets, so another machine holding the same key can use them;
// the key itself is stored nowhere. Without a key they stay in this machine's
// cache (secrets/<name>.json, 0600) as in an embedded workspace.

func (s *Store) sealKey() []byte {
	if s.shared == nil || s.shared.cfg.SecretsKey == "" {
		return nil
	}
	k := sha256.Sum256([]byte("aml secrets v1\x00" + s.shared.cfg.SecretsKey))
	return k[:]
}

func (s *Store) secretsAAD(name string) []byte { return []byte(s.shared.uuid + "/targets/" + name) }

func (s *Store) putSharedSecrets(name string, plain []byte) error {
	key := s.sealKey()
	if key == nil {
		return nil
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	box := aead.Seal(nil, nonce, plain, s.secretsAAD(name))
	_, err = s.db.ExecContext(context.Background(), `INSERT INTO target_secrets(name, nonce, box) VALUES (?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET nonce = excluded.nonce, box = excluded.box`, name, nonce, box)
	if err != nil {
		return fmt.Errorf("%s: storing sealed credentials of compute target %q: %w", s.shared.where, name, pgError(err))
	}
	return nil
}

// ErrNoSecretsHere is returned when a shared workspace's credentials of a
// target are neither in this machine's cache nor sealed in the database.
var ErrNoSecretsHere = errors.New("credentials are not available on this machine")

func (s *Store) getSharedSecrets(name string) ([]byte, error) {
	key := s.sealKey()
	if key == nil {
		return nil, fmt.Errorf("credentials of compute target %q: %w (the shared workspace keeps them sealed only with a secrets_key; set one, or give the credentials in this configuration)", name, ErrNoSecretsHere)
	}
	var nonce, box []byte
	err := s.db.QueryRowContext(context.Background(), `SELECT nonce, box FROM target_secrets WHERE name = ?`, name).Scan(&nonce, &box)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("credentials of compute target %q: %w (none sealed in %s)", name, ErrNoSecretsHere, s.shared.where)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: credentials of compute target %q: %w", s.shared.where, name, pgError(err))
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, nonce, box, s.secretsAAD(name))
	if err != nil {
		return nil, fmt.Errorf("credentials of compute target %q do not open with this secrets_key (sealed with another one)", name)
	}
	return plain, nil
}

func (s *Store) deleteSharedSecrets(ctx context.Context, name string) error {
	if s.shared == nil {
		return nil
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM target_secrets WHERE name = ?`, name)
	return err
}
