// the web client
