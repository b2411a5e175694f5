package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/templates"
)

// preview renders a template for one (sample or given) recipient, so a person
// can read the notice before 15,000 copies leave.
func preview(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("oshirase preview", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("template", "card-reissue", "template name")
	locale := fs.String("locale", "ja", "ja or en")
	dataFile := fs.String("data", "", "JSON file with the incident data (default: the template's sample data)")
	rcptFile := fs.String("recipient", "", "JSON file with a recipient (email, name, card_brand, card_last4, ...); default: a sample")
	charset := fs.String("charset", notice.CharsetUTF8, "utf-8 or iso-2022-jp (reports characters ISO-2022-JP cannot carry)")
	from := fs.String("from", "Example Co. <notice@example.jp>", "From address for --eml")
	eml := fs.String("eml", "", "also write the whole message as an .eml file")
	part := fs.String("part", "all", "what to print: all, subject, text or html")
	cfg, _, err := config.Load(fs, args, nil)
	if err != nil {
		return err
	}
	ts, err := templates.Load(cfg.TemplatesDir)
	if err != nil {
		return err
	}
	in, err := ts.Sample(*name, *locale)
	if err != nil {
		return err
	}
	if *dataFile != "" {
		var data map[string]any
		if err := readJSON(*dataFile, &data); err != nil {
			return err
		}
		if err := ts.Validate(*name, data); err != nil {
			return fmt.Errorf("%s: %w", *dataFile, err)
		}
		in.Data = data
	}
	if *rcptFile != "" {
		var r notice.Recipient
		if err := readJSON(*rcptFile, &r); err != nil {
			return err
		}
		in.Recipient = r
	}
	in.Locale = *locale
	in.Date = time.Now().In(notice.Zone(""))
	out, err := ts.Render(*name, in)
	if err != nil {
		return err
	}
	switch *part {
	case "subject":
		fmt.Fprintln(stdout, out.Subject)
	case "text":
		fmt.Fprint(stdout, out.Text)
	case "html":
		fmt.Fprint(stdout, out.HTML)
	case "all":
		fmt.Fprintf(stdout, "Subject: %s\n\n----- text/plain -----\n%s\n----- text/html -----\n%s\n", out.Subject, out.Text, out.HTML)
	default:
		return fmt.Errorf("--part %q: want all, subject, text or html", *part)
	}
	// The notice is shown either way, so the person can see where each
	// character is; a notice ISO-2022-JP cannot carry is an error, and no
	// .eml is written for it.
	if err := templates.CheckCharset(out, *charset); err != nil {
		return err
	}
	if *eml != "" {
		to := in.Recipient.Email
		if to == "" {
			to = "customer@example.jp"
		}
		keys, err := mailer.ParseDKIMKeys(cfg.DKIMKeys)
		if err != nil {
			return err
		}
		f, err := os.Create(*eml)
		if err != nil {
			return err
		}
		m := &mailer.Message{From: *from, To: to, ToName: in.Recipient.Name, Subject: out.Subject, Text: out.Text,
			HTML: out.HTML, MessageID: fmt.Sprintf("preview.%d@example.invalid", time.Now().UnixNano()), Charset: *charset}
		werr := mailer.WriteEML(f, m, &mailer.Options{ListUnsubscribe: cfg.ListUnsubscribe, DKIM: dkimOptions(cfg), DKIMKeys: keys})
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("write %s: %w", *eml, err)
		}
		fmt.Fprintf(stderr, "wrote %s\n", *eml)
	}
	return nil
}

func dkimOptions(cfg *config.Config) *mailer.DKIMOptions {
	if cfg.DKIMKeyFile == "" {
		return nil
	}
	return &mailer.DKIMOptions{Domain: cfg.DKIMDomain, Selector: cfg.DKIMSelector, KeyFile: cfg.DKIMKeyFile}
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
