package demoapi

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Item is one entry of a user's list.
type Item struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
}

// items keeps each subject's list in memory, bounded both per subject and
// in subjects, so that no caller can grow the process without limit.
type items struct {
	now func() time.Time

	mu        sync.Mutex
	bySubject map[string][]Item
}

func newItems(now func() time.Time) *items {
	return &items{now: now, bySubject: make(map[string][]Item)}
}

// list returns a copy of sub's items, oldest first.
func (s *items) list(sub string) []Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Item, len(s.bySubject[sub]))
	copy(out, s.bySubject[sub])
	return out
}

// add validates title and appends an item for sub.
func (s *items) add(sub, title string) (Item, error) {
	title, err := cleanTitle(title)
	if err != nil {
		return Item{}, err
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Item{}, err
	}
	it := Item{ID: hex.EncodeToString(b[:]), Title: title, CreatedAt: s.now().UTC().Truncate(time.Second)}
	s.mu.Lock()
	defer s.mu.Unlock()
	list, known := s.bySubject[sub]
	if !known && len(s.bySubject) >= MaxSubjects {
		return Item{}, ErrStoreFull
	}
	if len(list) >= MaxItemsPerSubject {
		return Item{}, fmt.Errorf("%w: at most %d items per user", ErrItemLimit, MaxItemsPerSubject)
	}
	s.bySubject[sub] = append(list, it)
	return it, nil
}

// remove deletes sub's item id; ErrItemNotFound when sub has none by that
// id (another subject's id is as unknown as a made-up one).
func (s *items) remove(sub, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.bySubject[sub]
	for i := range list {
		if list[i].ID == id {
			list = append(list[:i:i], list[i+1:]...)
			if len(list) == 0 {
				delete(s.bySubject, sub)
			} else {
				s.bySubject[sub] = list
			}
			return nil
		}
	}
	return ErrItemNotFound
}

// cleanTitle trims title and checks it is 1 to MaxTitleLength characters
// of valid UTF-8 without control characters.
func cleanTitle(title string) (string, error) {
	if !utf8.ValidString(title) {
		return "", fmt.Errorf("%w: not valid UTF-8", ErrInvalidTitle)
	}
	title = strings.TrimSpace(title)
	n := utf8.RuneCountInString(title)
	if n == 0 {
		return "", fmt.Errorf("%w: the title is empty", ErrInvalidTitle)
	}
	if n > MaxTitleLength {
		return "", fmt.Errorf("%w: %d characters, at most %d", ErrInvalidTitle, n, MaxTitleLength)
	}
	if strings.IndexFunc(title, unicode.IsControl) >= 0 {
		return "", fmt.Errorf("%w: control characters are not allowed", ErrInvalidTitle)
	}
	return title, nil
}
