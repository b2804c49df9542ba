package run

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Bounds on the params and tags a script logs: the record keeps at most
// MaxKeyValues of each, keys up to MaxKeyBytes, values cut at MaxValueBytes
// (MLflow's own limits are 250 and 6000/8000).
const (
	MaxKeyValues  = 1000
	MaxKeyBytes   = 250
	MaxValueBytes = 8 << 10
	maxTagsFile   = 16 << 20
)

// KeyValues is a bounded map of what a script logged (params or tags); Dropped
// counts entries it could not keep (malformed, empty key, past the bound).
type KeyValues struct {
	Values  map[string]string
	Dropped int
}

// Set keeps key=value when there is room; a later value of a key replaces an
// earlier one, as MLflow's set_tag and Azure's Run.tag do.
func (kv *KeyValues) Set(key, value string) {
	key = SanitizeText(strings.TrimSpace(key))
	if key == "" || len(key) > MaxKeyBytes {
		kv.Dropped++
		return
	}
	if kv.Values == nil {
		kv.Values = map[string]string{}
	}
	if _, ok := kv.Values[key]; !ok && len(kv.Values) >= MaxKeyValues {
		kv.Dropped++
		return
	}
	kv.Values[key] = cutUTF8(SanitizeText(value), MaxValueBytes)
}

// cutUTF8 shortens s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ReadTagsFile reads JSON lines {"key": ..., "value": ...} (the aml_run and
// azureml helpers write them to AML_TAGS_FILE) into kv; a missing file adds
// nothing.
func ReadTagsFile(root, path string, kv *KeyValues) error {
	f, err := OpenRunFile(root, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	lr := &io.LimitedReader{R: f, N: maxTagsFile}
	dec := json.NewDecoder(lr)
	for {
		var rec struct {
			Key   *string `json:"key"`
			Value any     `json:"value"`
		}
		err := dec.Decode(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			kv.Dropped++
			if lr.N == 0 {
				return fmt.Errorf("%s is larger than %d bytes; the rest was not read", path, maxTagsFile)
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		if rec.Key == nil {
			kv.Dropped++
			continue
		}
		switch v := rec.Value.(type) {
		case string:
			kv.Set(*rec.Key, v)
		case nil:
			kv.Set(*rec.Key, "")
		default:
			b, _ := json.Marshal(v)
			kv.Set(*rec.Key, string(b))
		}
	}
	return nil
}
