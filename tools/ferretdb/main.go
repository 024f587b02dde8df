// Command ferretdb runs FerretDB v1.24 (github.com/FerretDB/FerretDB) through its embeddable
// package, for logfleet's tests, demo and benches on machines without mongod.
//
// `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds, but the binary panics
// at start-up: the upstream command reads build/version/version.txt, which only FerretDB's own
// build (`bin/task gen-version`) writes. The embeddable package has no such step, so this small
// module of logfleet's own wraps it. Its go.sum pins every module it builds from.
//
//	ferretdb --listen-addr 127.0.0.1:27018 --handler sqlite --sqlite-url file:/var/tmp/ferretdb/
//	ferretdb --listen-addr 127.0.0.1:27018 --handler postgresql --postgresql-url postgres://127.0.0.1:5432/ferretdb
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27018", "TCP address to listen on")
	handler := flag.String("handler", "sqlite", "backend: sqlite or postgresql")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite URI of the data directory (sqlite handler; ends with /)")
	pgURL := flag.String("postgresql-url", "", "PostgreSQL connection string (postgresql handler)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: --log-level: %v\n", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listen},
		Logger:        logger,
		Handler:       *handler,
		SQLiteURL:     *sqliteURL,
		PostgreSQLURL: *pgURL,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %v\n", err)
		os.Exit(1)
	}

	// SIGTERM or Ctrl-C stops the listener and closes the backend cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger.Info("listening", "uri", f.MongoDBURI(), "handler", *handler)
	if err := f.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %v\n", err)
		os.Exit(1)
	}
}
