"""HTTP API channel: any system (SMS gateway, shop back end) sends customer messages in
over an authenticated endpoint and receives replies on a signed webhook."""
