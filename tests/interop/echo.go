// An interop target on Go's net/http (HTTP/1.1): it listens on an ephemeral port of
// 127.0.0.1, names it on the first stdout line, then writes every request received as one JSON
// line on stdout (headers as the handler saw them, Host first, the body in hex) and answers 200.
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
)

type record struct {
	Port    int         `json:"port"`
	Version string      `json:"version"`
	Method  string      `json:"method"`
	Target  string      `json:"target"`
	Headers [][2]string `json:"headers"`
	BodyHex string      `json:"body_hex"`
}

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	fmt.Printf("{\"listening\":{\"h1\":%d}}\n", port)
	var mu sync.Mutex
	out := json.NewEncoder(os.Stdout)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// net/http moves Host out of the header map into r.Host.
		headers := [][2]string{{"Host", r.Host}}
		names := make([]string, 0, len(r.Header))
		for name := range r.Header {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			for _, value := range r.Header[name] {
				headers = append(headers, [2]string{name, value})
			}
		}
		for _, coding := range r.TransferEncoding {
			headers = append(headers, [2]string{"Transfer-Encoding", coding})
		}
		mu.Lock()
		out.Encode(record{port, r.Proto, r.Method, r.RequestURI, headers, hex.EncodeToString(body)})
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	if err := http.Serve(listener, handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
