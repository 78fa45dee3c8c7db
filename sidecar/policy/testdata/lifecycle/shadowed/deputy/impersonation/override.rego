package deputy.impersonation

max_session := "15m"
