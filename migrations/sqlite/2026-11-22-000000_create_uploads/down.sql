DROP TABLE tokens;
DROP TABLE uploads;
