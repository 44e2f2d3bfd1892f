  V1ping
