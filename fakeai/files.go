package fakeai

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"time"
)

type fileObject struct {
	ID            string          `json:"id"`
	Object        string          `json:"object"`
	Bytes         int64           `json:"bytes"`
	CreatedAt     int64           `json:"created_at"`
	ExpiresAt     json.RawMessage `json:"expires_at"`
	Filename      string          `json:"filename"`
	Purpose       string          `json:"purpose"`
	Status        string          `json:"status"`
	StatusDetails json.RawMessage `json:"status_details"`
	// SHA256 is not in the real API: the hex SHA-256 of the uploaded bytes,
	// so tests can prove a multipart body passed intact.
	SHA256 string `json:"sha256"`
}

// files answers POST /v1/files (multipart/form-data with "purpose" and "file").
func (c *call) files() {
	ct := c.r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		c.invalid("", "", "Invalid Content-Type header ("+ct+"), expected multipart/form-data. (HINT: If you're "+
			"using curl, you can pass -H 'Content-Type: multipart/form-data')")
		return
	}
	f := fileObject{Object: "file", ExpiresAt: jsonNull, Status: "processed", StatusDetails: jsonNull}
	haveFile := false
	var content []byte
	mr := multipart.NewReader(bytes.NewReader(c.body), params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			c.invalid("", "", "Could not parse multipart form: "+err.Error())
			return
		}
		switch p.FormName() {
		case "purpose":
			b, err := io.ReadAll(io.LimitReader(p, 1024))
			if err != nil {
				c.invalid("purpose", "", "Could not read 'purpose': "+err.Error())
				return
			}
			f.Purpose = string(b)
		case "file":
			h := sha256.New()
			kept := &limitedBuffer{max: maxKeptFileBytes}
			n, err := io.Copy(io.MultiWriter(h, kept), p)
			content = kept.b
			if err != nil {
				c.invalid("file", "", "Could not read 'file': "+err.Error())
				return
			}
			haveFile = true
			f.Bytes, f.SHA256 = n, hex.EncodeToString(h.Sum(nil))
			f.Filename = path.Base(p.FileName())
			if f.Filename == "." || f.Filename == "/" {
				f.Filename = "upload"
			}
		}
		_ = p.Close()
	}
	if !haveFile {
		c.missingParam("file")
		return
	}
	if f.Purpose == "" {
		c.missingParam("purpose")
		return
	}
	if !c.admit(0, "") {
		return
	}
	f.ID, f.CreatedAt = newID("file-", 22), time.Now().Unix()
	c.s.storeFile(f, content)
	c.writeJSON(http.StatusOK, &f)
}

// limitedBuffer keeps the first max bytes written to it and takes the rest
// without keeping them.
type limitedBuffer struct {
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
