module cirello.io/pglock/cron

go 1.25.0

toolchain go1.26.11

require (
	cirello.io/pglock v0.0.0-00010101000000-000000000000
	github.com/robfig/cron/v3 v3.0.1
)

require github.com/lib/pq v1.12.3

require go.uber.org/goleak v1.3.0 // indirect

replace cirello.io/pglock => ../
