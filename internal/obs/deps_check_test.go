package obs

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/coreos/go-oidc/v3/oidc"
	_ "github.com/fasthttp/websocket"
	_ "github.com/go-jose/go-jose/v4"
	_ "github.com/go-jose/go-jose/v4/jwt"
	_ "github.com/gofiber/fiber/v2/middleware/proxy"
	_ "github.com/gorilla/securecookie"
	_ "github.com/redis/go-redis/v9"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/oauth2"
	_ "golang.org/x/oauth2/clientcredentials"
	_ "golang.org/x/sync/singleflight"
	_ "gopkg.in/yaml.v3"
)
