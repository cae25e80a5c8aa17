Console.WriteLine("isr");
