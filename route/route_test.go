package route_test

import (
	"strings"
	"testing"

	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

func TestRawPayload(t *testing.T) {
	s, err := route.Raw("anything & = %zz ' ; -- \\ 日本").Encode()
	require.NoError(t, err)
	require.Equal(t, "anything & = %zz ' ; -- \\ 日本", s)
	s, err = route.Raw(strings.Repeat("x", urlenc.MaxRowSize)).Encode()
	require.NoError(t, err)
	require.Len(t, s, urlenc.MaxRowSize)
	for _, bad := range []route.Raw{"a\x00b", "\xc3", route.Raw(strings.Repeat("x", urlenc.MaxRowSize+1))} {
		_, err := bad.Encode()
		require.ErrorIs(t, err, urlenc.ErrInvalid)
	}
}
