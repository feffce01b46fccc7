package urlenc_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/pgq-go/pgq/urlenc"
)

// Encoding a typed row: keys sorted, values escaped as Skytools'
// db_urlencode does, NULL as a bare key.
func ExampleFields_Encode() {
	row := urlenc.Fields{
		"id":      42,
		"name":    "Zoë & co",
		"active":  true,
		"created": time.Date(2024, 5, 1, 12, 30, 0, 0, time.UTC),
		"note":    nil, // NULL
	}
	s, err := row.Encode()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s)
	// Output:
	// active=t&created=2024-05-01T12%3A30%3A00Z&id=42&name=Zo%C3%AB+%26+co&note
}

// Decoding a row: every value is text; NULL (Valid false) is kept apart
// from the empty string.
func ExampleParse() {
	row, err := urlenc.Parse("id=42&name=Zo%C3%AB+%26+co&note&empty=")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("id=%q name=%q\n", row["id"].String, row["name"].String)
	fmt.Println("note is NULL:", !row["note"].Valid)
	fmt.Println("empty is NULL:", !row["empty"].Valid)

	// Malformed input is an error, never a silently different row.
	_, err = urlenc.Parse("id=4%2")
	fmt.Println(errors.Is(err, urlenc.ErrInvalid))
	// Output:
	// id="42" name="Zoë & co"
	// note is NULL: true
	// empty is NULL: false
	// true
}

// Decoding in the row's own order.
func ExampleParseOrdered() {
	fields, err := urlenc.ParseOrdered("op=upd&id=7&qty=3")
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range fields {
		fmt.Printf("%s=%s\n", f.Key, f.Value.String)
	}
	// Output:
	// op=upd
	// id=7
	// qty=3
}
