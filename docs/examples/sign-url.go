// Signs a selfie URL for ngx_unico_selfie_module.
//
//	go run sign-url.go KEY_FILE PROCESS_ID [EXPIRES]
//
// KEY_FILE: the first key line (base64 or base64url) is used; EXPIRES: a
// Unix time, default now + 300 s. Prints /selfies/<id>?expires=...&sig=...
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"
)

func signSelfieURL(key []byte, processID, expires string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(strings.ToLower(processID) + "\n" + expires))
	sig := base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	return "/selfies/" + processID + "?expires=" + expires + "&sig=" + sig
}

func readKey(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.NewReplacer("+", "-", "/", "_").Replace(line)
		key, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(line, "="))
		if err != nil {
			log.Fatal(err)
		}
		return key
	}
	log.Fatalf("%s: no key", path)
	return nil
}

func main() {
	if len(os.Args) < 3 {
		log.Fatal("usage: sign-url KEY_FILE PROCESS_ID [EXPIRES]")
	}
	expires := strconv.FormatInt(time.Now().Unix()+300, 10)
	if len(os.Args) > 3 {
		expires = os.Args[3]
	}
	fmt.Println(signSelfieURL(readKey(os.Args[1]), os.Args[2], expires))
}
